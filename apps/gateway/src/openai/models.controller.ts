/**
 * GET /v1/models and /v1/models/{id}: the base model and every adapter (adapters carry `parent`). A base model's id
 * has a slash (`HuggingFaceTB/SmolLM2-135M-Instruct`), so {id} is the rest of the path (a wildcard), as written or
 * with the slash escaped (`%2F`).
 */
import { Controller, Get, Inject, Param } from '@nestjs/common';
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { WorkersService } from '../workers/workers.service';

const CREATED = Math.floor(Date.now() / 1000);

/** The OpenAI model object of a worker's card (its `digest`, set only in a LoadAdapter answer, is no client's business). */
export function modelObject(card: Omit<common.ModelCard, 'digest'>) {
  return {
    id: card.id,
    object: 'model' as const,
    created: CREATED,
    owned_by: 'inlaid',
    parent: card.parent === '' ? null : card.parent,
    root: card.parent === '' ? card.id : card.parent,
    max_model_len: card.maxModelLen,
    ...(card.parent === '' ? {} : { lora_rank: card.rank, target_modules: card.targetModules }),
  };
}

@Controller('v1/models')
export class ModelsController {
  constructor(@Inject(WorkersService) private readonly workers: WorkersService) {}

  @Get()
  list() {
    return { object: 'list' as const, data: this.workers.listModels().map(modelObject) };
  }

  /**
   * Express 5 (path-to-regexp 8) gives a wildcard as its decoded segments: joined back with '/'. A trailing slash
   * (`/v1/models/sql/`) gives a last empty segment, dropped as Express's non-strict `:id` route ignored it.
   */
  @Get('*id')
  get(@Param('id') segments: string[] | string) {
    const parts = Array.isArray(segments) ? segments : [segments];
    const id = (parts.length > 1 && parts[parts.length - 1] === '' ? parts.slice(0, -1) : parts).join('/');
    const card = this.workers.listModels().find((m) => m.id === id);
    if (card === undefined) throw InlaidError.modelNotFound(id);
    return modelObject(card);
  }
}

/**
 * Serves one validated OpenAI request over HTTP: a JSON body, or an SSE stream. A client that disconnects
 * mid-stream gets its request aborted on the worker. Errors before the first byte go to the error filter;
 * errors after it are sent as a final SSE error event.
 */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Response } from 'express';
import { InlaidError } from '../common/inlaid-error';
import { toOpenAIError } from '../common/http-mapping';
import { GenerationService } from '../generation/generation.service';
import type { FinishReason, Generation } from '../generation/generation.types';
import type { OpenAIRequest } from './request-validation';
import { chatResponse, completionResponse, ResponseMeta, usageOf } from './response-shapes';
import { SSE_HEADERS, sseEvent } from './sse';
import { StreamEncoder } from './stream-encoder';

type Kind = 'completions' | 'chat.completions';

@Injectable()
export class OpenAIResponder {
  private readonly logger = new Logger('OpenAI');

  constructor(@Inject(GenerationService) private readonly generation: GenerationService) {}

  async respond(kind: Kind, req: OpenAIRequest, res: Response): Promise<void> {
    const left = new AbortController();
    const onEarlyClose = () => {
      if (!res.writableFinished) left.abort();
    };
    res.on('close', onEarlyClose);
    const gen = await this.generation.start(req.input, left.signal).finally(() => res.off('close', onEarlyClose));
    if (res.destroyed) {
      gen.abort('client disconnected before the first token');
      return;
    }
    const onClose = () => {
      if (!res.writableFinished) gen.abort('client disconnected');
    };
    res.on('close', onClose);
    try {
      if (req.stream) await this.stream(kind, gen, req.includeUsage, res);
      else res.json(await this.collect(kind, gen));
    } finally {
      res.off('close', onClose);
    }
  }

  private meta(gen: Generation): ResponseMeta {
    return { id: gen.id, created: gen.created, model: gen.model };
  }

  private async collect(kind: Kind, gen: Generation) {
    let text = '';
    let finish: FinishReason | null = null;
    let completionTokens = 0;
    for await (const d of gen.deltas) {
      text += d.text;
      completionTokens = d.completionTokens;
      finish = d.finishReason ?? finish;
    }
    const usage = usageOf(gen.promptTokens, completionTokens);
    const meta = this.meta(gen);
    return kind === 'completions' ? completionResponse(meta, text, finish, usage) : chatResponse(meta, text, finish, usage);
  }

  private async stream(kind: Kind, gen: Generation, includeUsage: boolean, res: Response): Promise<void> {
    const encoder = new StreamEncoder(kind, this.meta(gen), includeUsage);
    res.status(200).set(SSE_HEADERS);
    res.flushHeaders();
    const write = (events: string[]) => events.forEach((e) => res.write(e));
    write(encoder.open());
    try {
      for await (const d of gen.deltas) {
        if (res.destroyed) break;
        write(encoder.delta(d));
      }
    } catch (err) {
      const error = err instanceof InlaidError ? err : new InlaidError(status.INTERNAL, String(err));
      this.logger.warn(`stream ${gen.id} failed: ${error.message}`);
      if (!res.destroyed) res.write(sseEvent(toOpenAIError(error).body));
    }
    res.end();
  }
}

/**
 * Runs one generation end to end: route to a worker, Prepare (tokenize + validate), Admit on the worker's
 * Session, stream deltas back, Abort when the consumer goes away, and record the request's timeline.
 */
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { Inject, Injectable } from '@nestjs/common';
import { worker } from '@inlaid/proto';
import { fromWorkerError, InlaidError } from '../common/inlaid-error';
import { RecordsService } from '../records/records.service';
import { AsyncQueue } from '../workers/async-queue';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { toGenerationDelta } from './delta-mapping';
import type { Generation, GenerationDelta, GenerationInput } from './generation.types';
import { RequestTimeline } from './request-timeline';

const PREPARE_TIMEOUT_MS = 15_000;
const ID_PREFIX = { completions: 'cmpl', 'chat.completions': 'chatcmpl', grpc: 'gen' } as const;

@Injectable()
export class GenerationService {
  constructor(
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(RecordsService) private readonly records: RecordsService,
  ) {}

  async start(input: GenerationInput): Promise<Generation> {
    const id = input.requestId || `${ID_PREFIX[input.api]}-${randomUUID().replace(/-/g, '')}`;
    const timeline = new RequestTimeline(id, input.model, input.api, new Date());
    try {
      const conn = this.workers.pick(input.model);
      const prepared = await conn.prepare(
        { model: input.model, prompt: input.prompt, messages: [...input.messages], sampling: input.sampling },
        PREPARE_TIMEOUT_MS,
      );
      const promptTokens = prepared.promptTokenIds.length;
      timeline.routed(conn.addr, promptTokens);
      const sampling = { ...input.sampling, maxTokens: prepared.maxTokens || input.sampling.maxTokens };
      const queue = conn.admit({ requestId: id, model: input.model, promptTokenIds: prepared.promptTokenIds, sampling });
      return this.running(id, input.model, promptTokens, conn, queue, timeline);
    } catch (err) {
      const error = fromWorkerError(err, input.model);
      this.record(timeline.close('rejected', new Date(), null, error.message));
      throw error;
    }
  }

  private running(
    id: string,
    model: string,
    promptTokens: number,
    conn: WorkerConnection,
    queue: AsyncQueue<worker.TokenDelta>,
    timeline: RequestTimeline,
  ): Generation {
    let aborted = false;
    const abort = (reason: string): void => {
      if (queue.isClosed) return;
      aborted = true;
      conn.abort(id);
      this.record(timeline.close('aborted', new Date(), 'abort', reason));
    };
    const deltas = this.stream(queue, promptTokens, timeline, () => aborted, abort);
    return { id, model, promptTokens, created: Math.floor(Date.now() / 1000), deltas, abort };
  }

  private async *stream(
    queue: AsyncQueue<worker.TokenDelta>,
    promptTokens: number,
    timeline: RequestTimeline,
    wasAborted: () => boolean,
    abort: (reason: string) => void,
  ): AsyncGenerator<GenerationDelta> {
    let counted = 0;
    try {
      for await (const raw of queue) {
        counted += raw.tokenIds.length;
        const d = toGenerationDelta(raw, promptTokens);
        const delta = { ...d, completionTokens: Math.max(d.completionTokens, counted) };
        timeline.progress(delta.completionTokens, delta.promptTokens, new Date());
        if (delta.finishReason === 'abort' || delta.finishReason === 'error') {
          throw new InlaidError(status.INTERNAL, `The worker ended the request (${delta.finishReason}).`);
        }
        yield delta;
        if (delta.finishReason !== null) {
          this.record(timeline.close('completed', new Date(), delta.finishReason, null));
          return;
        }
      }
      if (!wasAborted()) throw InlaidError.unavailable('The worker ended the request without finishing it.');
    } catch (err) {
      const error = fromWorkerError(err, '');
      this.record(timeline.close('failed', new Date(), null, error.message));
      throw error;
    } finally {
      // The consumer stopped iterating early (break / return): free the worker's blocks.
      abort('consumer stopped reading');
    }
  }

  private record(row: ReturnType<RequestTimeline['close']>): void {
    if (row !== null) this.records.add(row);
  }
}

/**
 * Runs one generation end to end: route to a worker, Prepare (tokenize + validate), Admit on the worker's
 * Session, stream deltas back, Abort when the consumer goes away, and record the request's timeline.
 *
 * Worker failure: a request that has not yet delivered any output to its client (Prepare failed, Admit on a
 * dead link, or the link broke before the first delta) is retried transparently on another ready worker,
 * each worker at most once. Once output has been delivered, a broken link ends the request with a clean
 * UNAVAILABLE error (HTTP 503 / an SSE error event, gRPC UNAVAILABLE): replaying it could duplicate text.
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

interface Attempt {
  readonly conn: WorkerConnection;
  readonly queue: AsyncQueue<worker.TokenDelta>;
  readonly promptTokens: number;
}

function isWorkerLoss(err: unknown): boolean {
  const code = err instanceof InlaidError ? err.status : (err as { code?: unknown } | null)?.code;
  return code === status.UNAVAILABLE;
}

@Injectable()
export class GenerationService {
  constructor(
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(RecordsService) private readonly records: RecordsService,
  ) {}

  async start(input: GenerationInput): Promise<Generation> {
    const id = input.requestId || `${ID_PREFIX[input.api]}-${randomUUID().replace(/-/g, '')}`;
    const timeline = new RequestTimeline(id, input.model, input.api, new Date());
    const tried = new Set<string>();
    try {
      const first = await this.attempt(id, input, tried, timeline);
      return this.running(id, input, first, tried, timeline);
    } catch (err) {
      const error = fromWorkerError(err, input.model);
      this.record(timeline.close('rejected', new Date(), null, error.message));
      throw error;
    }
  }

  /** Prepare + Admit on the best worker not yet tried; on a lost worker, moves on to the next one. */
  private async attempt(id: string, input: GenerationInput, tried: Set<string>, timeline: RequestTimeline): Promise<Attempt> {
    for (;;) {
      const conn = this.workers.pick(input.model, tried);
      tried.add(conn.addr);
      try {
        const prepared = await conn.prepare(
          { model: input.model, prompt: input.prompt, messages: [...input.messages], sampling: input.sampling },
          PREPARE_TIMEOUT_MS,
        );
        const promptTokens = prepared.promptTokenIds.length;
        const sampling = { ...input.sampling, maxTokens: prepared.maxTokens || input.sampling.maxTokens };
        const queue = conn.admit({ requestId: id, model: input.model, promptTokenIds: prepared.promptTokenIds, sampling });
        timeline.routed(conn.addr, promptTokens);
        return { conn, queue, promptTokens };
      } catch (err) {
        if (!isWorkerLoss(err) || !this.workers.hasReadyOutside(tried)) throw err;
      }
    }
  }

  private running(id: string, input: GenerationInput, first: Attempt, tried: Set<string>, timeline: RequestTimeline): Generation {
    let current = first;
    let aborted = false;
    const abort = (reason: string): void => {
      if (current.queue.isClosed) return;
      aborted = true;
      current.conn.abort(id);
      this.record(timeline.close('aborted', new Date(), 'abort', reason));
    };
    const retry = async (): Promise<Attempt> => (current = await this.attempt(id, input, tried, timeline));
    const deltas = this.stream(() => current, retry, timeline, () => aborted, abort);
    return { id, model: input.model, promptTokens: first.promptTokens, created: Math.floor(Date.now() / 1000), deltas, abort };
  }

  private async *stream(
    current: () => Attempt,
    retry: () => Promise<Attempt>,
    timeline: RequestTimeline,
    wasAborted: () => boolean,
    abort: (reason: string) => void,
  ): AsyncGenerator<GenerationDelta> {
    let counted = 0;
    let delivered = false;
    try {
      for (;;) {
        try {
          for await (const raw of current().queue) {
            counted += raw.tokenIds.length;
            const d = toGenerationDelta(raw, current().promptTokens);
            const delta = { ...d, completionTokens: Math.max(d.completionTokens, counted) };
            timeline.progress(delta.completionTokens, delta.promptTokens, new Date());
            if (delta.finishReason === 'abort' || delta.finishReason === 'error') {
              throw new InlaidError(status.INTERNAL, `The worker ended the request (${delta.finishReason}).`);
            }
            delivered = true;
            yield delta;
            if (delta.finishReason !== null) {
              this.record(timeline.close('completed', new Date(), delta.finishReason, null));
              return;
            }
          }
          if (!wasAborted()) throw InlaidError.unavailable('The worker ended the request without finishing it.');
          return;
        } catch (err) {
          if (delivered || wasAborted() || !isWorkerLoss(err)) throw err;
          counted = 0;
          await retry(); // throws when no other worker is ready: the original loss is then reported
        }
      }
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

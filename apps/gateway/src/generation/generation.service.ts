/**
 * Runs one generation end to end: Prepare (tokenize + validate) on a ready worker, hand the prepared
 * request to the scheduler (scheduling/), wait until the policy admits it on a worker, stream its deltas
 * back, cancel it when the consumer goes away, and record the request's timeline.
 *
 * Worker failure: Prepare on a lost, shutting-down or overloaded worker is retried on another ready worker, each at
 * most once (a retry's NOT_FOUND, a worker without the adapter, gives the first failure back). A request admitted but
 * without output yet when its worker is lost (or refuses it as shutting down) waits again in the scheduler and runs on
 * another worker (scheduling/dispatcher.ts); once output has been delivered, a broken link ends the request with a
 * clean UNAVAILABLE error (HTTP 503 / an SSE error event, gRPC UNAVAILABLE). Scheduler refusals: scheduling/errors.ts.
 */
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { Inject, Injectable } from '@nestjs/common';
import { worker } from '@inlaid/proto';
import { clientLeft } from '../common/client-left';
import { fromWorkerError, InlaidError } from '../common/inlaid-error';
import { RecordsService } from '../records/records.service';
import { SchedulingService } from '../scheduling/scheduling.service';
import { Ticket } from '../scheduling/ticket';
import { WorkersService } from '../workers/workers.service';
import { toGenerationDelta } from './delta-mapping';
import type { Generation, GenerationDelta, GenerationInput } from './generation.types';
import { RequestTimeline } from './request-timeline';

const PREPARE_TIMEOUT_MS = 15_000;
export const ID_PREFIX = { completions: 'cmpl', 'chat.completions': 'chatcmpl', grpc: 'gen' } as const;

/**
 * Whether a failed Prepare (already converted by fromWorkerError) may be tried on another worker: the worker named
 * itself shutting down or overloaded, or (no kind) its link failed (workerLinkError's 503). Never on the worker's
 * other refusals, whatever their status code.
 */
function triesElsewhere(err: InlaidError): boolean {
  const kind = err.details.workerKind;
  if (kind === undefined) return err.status === status.UNAVAILABLE;
  return kind === worker.RequestErrorKind.REQUEST_ERROR_KIND_SHUTTING_DOWN || kind === worker.RequestErrorKind.REQUEST_ERROR_KIND_OVERLOADED;
}

/**
 * Abort listeners `start` holds on its signal at once, at most (while a Prepare runs: its wait and its RPC's); startChoices
 * shares one signal between a request's choices and raises that signal's listener limit to match.
 */
export const START_SIGNAL_LISTENERS = 2;

/** `work()`, or a rejection as soon as `signal` aborts; `work` is not started at all when it has already. */
function untilAborted<T>(work: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work();
  if (signal.aborted) return Promise.reject(clientLeft('before the request was prepared'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(clientLeft('while the request was prepared'));
    signal.addEventListener('abort', onAbort, { once: true });
    work()
      .then(resolve, reject)
      .finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * The id a request is known by to the scheduler, the workers and the records: its own, or with a tenant (gRPC: the
 * key's principal id) `<tenant>/<id>`, so two API keys may choose the same request_id and neither can reach (or learn
 * of) the other's request through it. Principal ids (a key's uuid, `bootstrap:<n>`, `anonymous`) and generated ids
 * (cmpl-…, gen-…) hold no `/`: ids of different tenants, or scoped and unscoped ones, never meet.
 */
function scopedId(id: string, tenant: string | undefined): string {
  if (tenant === undefined) return id;
  if (tenant.includes('/')) throw new Error(`a tenant holds no '/': ${tenant}`);
  return `${tenant}/${id}`;
}

/** The prompt text a prompt-reading length predictor sees. */
function promptText(input: GenerationInput): string {
  return input.prompt !== '' ? input.prompt : input.messages.map((m) => m.content).join('\n');
}

@Injectable()
export class GenerationService {
  /** The scoped ids (scopedId) that clients chose for the requests running now (reserve). */
  private readonly held = new Set<string>();

  constructor(
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(RecordsService) private readonly records: RecordsService,
    @Inject(SchedulingService) private readonly scheduling: SchedulingService,
  ) {}

  /**
   * Holds the id the client chose for a request (scoped by its key) until the returned release (idempotent) runs: a
   * second request of that key and id meanwhile is refused ALREADY_EXISTS naming it, whatever the n of either (its
   * choices run as `<id>#<i>`, fan-out.ts). A request without an id of its own gets a fresh one: nothing to hold. The
   * one check of a client's id: the scheduler's and the worker link's (each run its own id: resume.ts runRequestId)
   * are invariants, never a client's error.
   */
  reserve(input: GenerationInput): () => void {
    if (input.requestId === undefined || input.requestId === '') return () => undefined;
    const key = scopedId(input.requestId, input.tenant);
    if (this.held.has(key)) throw new InlaidError(status.ALREADY_EXISTS, `Request id ${input.requestId} is already running.`, { param: 'request_id' });
    this.held.add(key);
    let holding = true;
    return () => {
      if (holding) this.held.delete(key);
      holding = false;
    };
  }

  /**
   * Prepares the request, queues it with the scheduler and resolves once a worker admitted it. `signal` is the
   * client going away: a request still waiting in the queue is dropped and never reaches a worker.
   */
  async start(input: GenerationInput, signal?: AbortSignal): Promise<Generation> {
    const id = input.requestId || `${ID_PREFIX[input.api]}-${randomUUID().replace(/-/g, '')}`;
    const key = scopedId(id, input.tenant);
    const timeline = new RequestTimeline(key, input.model, input.api, new Date());
    try {
      // a client already gone is not prepared (a Prepare may compile a grammar for up to 10 s); one that leaves
      // during its Prepare is not waited for, and its Prepare call is cancelled (nothing was queued)
      const prepared = await untilAborted(() => this.prepare(input, signal), signal);
      const promptTokens = prepared.promptTokenIds.length;
      const sampling = { ...input.sampling, maxTokens: prepared.maxTokens || input.sampling.maxTokens };
      const ticket = this.scheduling.submit({ id: key, model: input.model, promptTokenIds: prepared.promptTokenIds, sampling }, input.model, promptText(input));
      const onAbort = (): void => this.scheduling.cancel(key);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
      const workerAddr = await ticket.admitted.finally(() => signal?.removeEventListener('abort', onAbort));
      timeline.routed(workerAddr, promptTokens);
      return this.running(id, key, input, ticket, promptTokens, timeline);
    } catch (err) {
      // a client gone while queued ends the ticket with a plain Error (scheduling/ticket.ts): not a bug to log
      const gone = signal?.aborted === true && !(err instanceof InlaidError);
      const error = gone ? clientLeft('while the request was queued') : fromWorkerError(err, input.model);
      if (signal?.aborted) this.record(timeline.close('aborted', new Date(), 'abort', 'client disconnected while prepared or queued'));
      else this.record(timeline.close('rejected', new Date(), null, error.message));
      throw error;
    }
  }

  /**
   * Prepare on the best worker not yet tried (waiting, up to WorkersService.catchUpWaitMs, for a worker still catching up
   * on the model when no other lists it: WorkersService.pick); when it is lost, shutting down or overloaded (triesElsewhere), on the next
   * one (not once `signal` aborted: start() answers a client gone). A retry's NOT_FOUND means that worker lacks the
   * model (an adapter the first one serves: hasReadyOutside does not look at models): the first failure is the answer;
   * so it is when the retry's pick fails (its wait for a worker catching up on the model ran out: 503).
   */
  private async prepare(input: GenerationInput, signal?: AbortSignal): Promise<worker.PrepareResponse> {
    const tried = new Set<string>();
    let first: InlaidError | undefined;
    for (;;) {
      let conn;
      try {
        conn = await this.workers.pick(input.model, tried, signal);
      } catch (err) {
        if (first !== undefined && !signal?.aborted) throw first; // a retry's wait that ended in a 503: the first failure stands
        throw err;
      }
      tried.add(conn.addr);
      try {
        return await conn.prepare(prepareRequest(input), PREPARE_TIMEOUT_MS, signal);
      } catch (err) {
        if (signal?.aborted) throw err;
        const error = fromWorkerError(err, input.model);
        if (first !== undefined && error.status === status.NOT_FOUND) throw first;
        first ??= error;
        if (!triesElsewhere(error) || !this.workers.hasReadyOutside(tried)) throw error;
      }
    }
  }

  /** `id`: the request's id as its client knows it; `key`: as the scheduler does (scopedId). */
  private running(id: string, key: string, input: GenerationInput, ticket: Ticket, promptTokens: number, timeline: RequestTimeline): Generation {
    let aborted = false;
    let done = false;
    const abort = (reason: string): void => {
      if (done || aborted) return;
      aborted = true;
      this.scheduling.cancel(key);
      this.record(timeline.close('aborted', new Date(), 'abort', reason));
    };
    const deltas = this.stream(ticket, promptTokens, timeline, () => aborted, abort, () => (done = true));
    return { id, model: input.model, promptTokens, created: Math.floor(Date.now() / 1000), deltas, abort };
  }

  private async *stream(
    ticket: Ticket,
    promptTokens: number,
    timeline: RequestTimeline,
    wasAborted: () => boolean,
    abort: (reason: string) => void,
    finished: () => void,
  ): AsyncGenerator<GenerationDelta> {
    let counted = 0;
    try {
      for await (const event of ticket.events) {
        if (event.kind === 'admitted') {
          timeline.routed(event.worker, promptTokens);
          continue;
        }
        counted += event.delta.tokenIds.length;
        const d = toGenerationDelta(event.delta, promptTokens);
        const delta = { ...d, completionTokens: Math.max(d.completionTokens, counted) };
        timeline.progress(delta.completionTokens, delta.promptTokens, new Date());
        if (delta.finishReason === 'abort' || delta.finishReason === 'error') {
          throw new InlaidError(status.INTERNAL, `The worker ended the request (${delta.finishReason}).`);
        }
        yield delta;
        if (delta.finishReason !== null) {
          finished();
          this.record(timeline.close('completed', new Date(), delta.finishReason, null));
          return;
        }
      }
      if (!wasAborted()) throw InlaidError.unavailable('The worker ended the request without finishing it.');
    } catch (err) {
      finished();
      const error = fromWorkerError(err, '');
      this.record(timeline.close('failed', new Date(), null, error.message));
      throw error;
    } finally {
      // The consumer stopped iterating early (break / return): drop the request from the scheduler and worker.
      abort('consumer stopped reading');
    }
  }

  private record(row: ReturnType<RequestTimeline['close']>): void {
    if (row !== null) this.records.add(row);
  }
}

/** The worker's PrepareRequest for a generation (pure). */
export function prepareRequest(input: GenerationInput): worker.PrepareRequest {
  return {
    model: input.model,
    prompt: input.prompt,
    messages: [...input.messages],
    sampling: input.sampling,
    tools: input.tools ?? '',
    ...(input.addSpecialTokens === undefined ? {} : { addSpecialTokens: input.addSpecialTokens }),
  };
}

/**
 * Worker.Tokenize / Worker.Detokenize for /tokenize, /detokenize and gRPC Inference's Tokenize / Detokenize: the
 * worker serving the model owns its tokenizer and chat template. An empty model is the base model; an unknown one
 * NOT_FOUND (model_not_found), ids outside the vocabulary INVALID_ARGUMENT naming `tokens`. The worker call ends with
 * its client: `signal` (the client cancelled or disconnected) cancels it, and it carries the client's deadline when
 * that is sooner than the gateway's own 15 s.
 */
import { type CallOptions, type ClientUnaryCall, type Deadline, Metadata, status } from '@grpc/grpc-js';
import type { common, worker } from '@inlaid/proto';
import { clientLeft } from '../common/client-left';
import { fromWorkerError, InlaidError } from '../common/inlaid-error';
import type { WorkersService } from '../workers/workers.service';

const CALL_TIMEOUT_MS = 15_000;

/** A worker's refusal, naming `tokens` when it is about the ids. */
export function tokenizeError(err: unknown, model: string): InlaidError {
  const error = fromWorkerError(err, model);
  if (error.status === status.INVALID_ARGUMENT && error.message.startsWith('tokens:')) {
    return new InlaidError(status.INVALID_ARGUMENT, error.message, { param: 'tokens', code: 'invalid_value' });
  }
  return error;
}

/** What ends a worker call early: the client going away (`signal`), and the client's own deadline. */
export interface CallLimits {
  readonly signal?: AbortSignal;
  readonly deadline?: Deadline;
}

/** A client's deadline in ms since the epoch (grpc-js: a Date, ms since the epoch, or Infinity). */
const deadlineMs = (client: Deadline): number => (client instanceof Date ? client.getTime() : client);

/** The sooner of the gateway's call timeout and the client's deadline. */
function deadlineOf(client: Deadline | undefined): number {
  const own = Date.now() + CALL_TIMEOUT_MS;
  return client === undefined ? own : Math.min(own, deadlineMs(client));
}

export class TokenizerCalls {
  constructor(private readonly workers: WorkersService) {}

  /** The model, or the base model served when empty (503 when no worker is ready). */
  modelOrBase(model: string): string {
    if (model !== '') return model;
    const base = this.workers.listModels().find((m) => m.parent === '');
    if (base === undefined) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    return base.id;
  }

  tokenize(req: worker.TokenizeRequest, limits: CallLimits = {}): Promise<common.TokenizeResponse> {
    const r = { ...req, model: this.modelOrBase(req.model) };
    return this.call<common.TokenizeResponse>(r.model, limits, (rpc, options, cb) => rpc.tokenize(r, new Metadata(), options, cb));
  }

  detokenize(req: common.DetokenizeRequest, limits: CallLimits = {}): Promise<common.DetokenizeResponse> {
    const r = { ...req, model: this.modelOrBase(req.model) };
    return this.call<common.DetokenizeResponse>(r.model, limits, (rpc, options, cb) => rpc.detokenize(r, new Metadata(), options, cb));
  }

  private async call<Res>(
    model: string,
    { signal, deadline }: CallLimits,
    send: (rpc: worker.WorkerClient, options: Partial<CallOptions>, cb: (err: unknown, res: Res) => void) => ClientUnaryCall,
  ): Promise<Res> {
    if (signal?.aborted) throw clientLeft('before the worker was asked');
    let conn;
    try {
      // waits for a worker catching up on the model (WorkersService.pick), no longer than the client's deadline
      conn = await this.workers.pick(model, undefined, signal, deadline === undefined ? undefined : deadlineMs(deadline));
    } catch (err) {
      throw signal?.aborted ? clientLeft('before the worker was asked') : tokenizeError(err, model);
    }
    if (signal?.aborted) throw clientLeft('before the worker was asked');
    return new Promise<Res>((resolve, reject) => {
      const cancel = (): void => call.cancel(); // the callback then gets CANCELLED
      const call = send(conn.rpc, { deadline: deadlineOf(deadline) }, (err, res) => {
        signal?.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(res);
      });
      signal?.addEventListener('abort', cancel, { once: true });
    }).catch((err: unknown) => Promise.reject(tokenizeError(err, model)));
  }
}

/**
 * Worker.Tokenize / Worker.Detokenize for /tokenize, /detokenize and gRPC Inference's Tokenize / Detokenize: the
 * worker serving the model owns its tokenizer and chat template. An empty model is the base model; an unknown one
 * NOT_FOUND (model_not_found), ids outside the vocabulary INVALID_ARGUMENT naming `tokens`.
 */
import { Metadata, status } from '@grpc/grpc-js';
import type { common, worker } from '@inlaid/proto';
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

export class TokenizerCalls {
  constructor(private readonly workers: WorkersService) {}

  /** The model, or the base model served when empty (503 when no worker is ready). */
  modelOrBase(model: string): string {
    if (model !== '') return model;
    const base = this.workers.listModels().find((m) => m.parent === '');
    if (base === undefined) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    return base.id;
  }

  tokenize(req: worker.TokenizeRequest): Promise<common.TokenizeResponse> {
    const r = { ...req, model: this.modelOrBase(req.model) };
    return this.call<common.TokenizeResponse>(r.model, (rpc, cb) => rpc.tokenize(r, new Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, cb));
  }

  detokenize(req: common.DetokenizeRequest): Promise<common.DetokenizeResponse> {
    const r = { ...req, model: this.modelOrBase(req.model) };
    return this.call<common.DetokenizeResponse>(r.model, (rpc, cb) => rpc.detokenize(r, new Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, cb));
  }

  private call<Res>(model: string, send: (rpc: worker.WorkerClient, cb: (err: unknown, res: Res) => void) => void): Promise<Res> {
    return new Promise<Res>((resolve, reject) => send(this.workers.pick(model).rpc, (err, res) => (err ? reject(err) : resolve(res)))).catch(
      (err: unknown) => Promise.reject(tokenizeError(err, model)),
    );
  }
}

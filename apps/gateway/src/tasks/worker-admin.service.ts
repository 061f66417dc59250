/**
 * Admin calls to the workers for onboarding: validate an adapter, load/unload it on every worker, and run
 * an incremental re-quantization (a server stream of progress). Loads and unloads are idempotent
 * (ALREADY_EXISTS / NOT_FOUND count as done); transport failures surface as UNAVAILABLE (retryable).
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import { Inject, Injectable } from '@nestjs/common';
import { common, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';

const ADMIN_TIMEOUT_MS = 60_000;

export interface QuantTaskSpec {
  readonly name: string;
  readonly adapterPath: string;
  readonly calibrationPath: string;
}

export function toAdminError(err: unknown, param?: string): InlaidError {
  if (err instanceof InlaidError) return err;
  const e = err as Partial<ServiceError>;
  const message = e.details ?? e.message ?? String(err);
  switch (e.code) {
    case status.INVALID_ARGUMENT:
      return InlaidError.invalid(message, param);
    case status.UNAVAILABLE:
    case status.CANCELLED:
    case status.DEADLINE_EXCEEDED:
      return InlaidError.unavailable(`Worker unavailable: ${message}`);
    case undefined:
      return new InlaidError(status.INTERNAL, message);
    default:
      return new InlaidError(e.code, message);
  }
}

function unary<Req, Res>(
  fn: (req: Req, md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => unknown,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, new Metadata(), { deadline: Date.now() + ADMIN_TIMEOUT_MS }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

@Injectable()
export class WorkerAdminService {
  constructor(@Inject(WorkersService) private readonly workers: WorkersService) {}

  private ready(): WorkerConnection[] {
    const ready = this.workers.readyConnections();
    if (ready.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    return ready;
  }

  /** Validates on one worker (all serve the same base); 400 with the worker's reason. */
  async validate(name: string, path: string, param = 'adapter'): Promise<common.ModelCard> {
    const c = this.ready()[0] as WorkerConnection;
    return unary(c.rpc.validateAdapter.bind(c.rpc), { name, path }).catch((err: unknown) => {
      throw toAdminError(err, param);
    });
  }

  async loadEverywhere(name: string, path: string, param = 'adapter'): Promise<void> {
    for (const c of this.ready()) {
      try {
        await unary(c.rpc.loadAdapter.bind(c.rpc), { name, path });
      } catch (err) {
        if ((err as ServiceError).code !== status.ALREADY_EXISTS) throw toAdminError(err, param);
      }
      await c.refreshInfo().catch(() => undefined);
    }
  }

  async unloadEverywhere(name: string): Promise<void> {
    for (const c of this.ready()) {
      try {
        await unary(c.rpc.unloadAdapter.bind(c.rpc), { name });
      } catch (err) {
        if ((err as ServiceError).code !== status.NOT_FOUND) throw toAdminError(err);
      }
      await c.refreshInfo().catch(() => undefined);
    }
  }

  /** Runs the re-quantization on every ready worker in turn; resolves with the last DONE event. */
  async requantize(add: readonly QuantTaskSpec[], remove: readonly string[], onProgress: (p: worker.RequantizeProgress) => Promise<void>): Promise<worker.RequantizeProgress> {
    let last: worker.RequantizeProgress | null = null;
    for (const c of this.ready()) last = await this.requantizeOn(c, add, remove, onProgress);
    return last as worker.RequantizeProgress;
  }

  private requantizeOn(
    c: WorkerConnection,
    add: readonly QuantTaskSpec[],
    remove: readonly string[],
    onProgress: (p: worker.RequantizeProgress) => Promise<void>,
  ): Promise<worker.RequantizeProgress> {
    const req: worker.RequantizeRequest = { add: add.map((t) => ({ ...t })), remove: [...remove] };
    return new Promise((resolve, reject) => {
      let chain = Promise.resolve();
      let final: worker.RequantizeProgress | null = null;
      const call = c.rpc.requantize(req);
      call.on('data', (p: worker.RequantizeProgress) => {
        if (p.stage === worker.RequantizeProgress_Stage.STAGE_DONE || p.stage === worker.RequantizeProgress_Stage.STAGE_FAILED) final = p;
        chain = chain.then(() => onProgress(p)).catch(() => undefined);
      });
      call.on('error', (err: ServiceError) => reject(toAdminError(err)));
      call.on('end', () => {
        void chain.then(() => {
          if (final === null) return reject(InlaidError.unavailable(`worker ${c.addr} ended the re-quantization stream early`));
          if (final.stage === worker.RequantizeProgress_Stage.STAGE_FAILED) {
            return reject(new InlaidError(status.INTERNAL, `re-quantization failed on ${c.addr}: ${final.message}`));
          }
          resolve(final);
        });
      });
    });
  }
}

/**
 * Admin calls to the workers for onboarding: validate an adapter, load/unload it on every worker, and run
 * an incremental re-quantization, once per checkpoint store (shared-requantize.ts). Loads and unloads are
 * idempotent (ALREADY_EXISTS / NOT_FOUND count as done); transport failures surface as UNAVAILABLE (retryable).
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import { Inject, Injectable } from '@nestjs/common';
import { common, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { ProgressSink, QuantTaskSpec, SharedRequantize } from './shared-requantize';

export type { ProgressSink, QuantTaskSpec, WorkerRole } from './shared-requantize';

const ADMIN_TIMEOUT_MS = 60_000;

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

  /**
   * Re-quantizes once per checkpoint store: the store's first ready worker (WORKER_ADDRS order) quantizes,
   * the others follow; resolves with the DONE event once every ready worker serves the new version.
   */
  requantize(add: readonly QuantTaskSpec[], remove: readonly string[], onProgress: ProgressSink): Promise<worker.RequantizeProgress> {
    return new SharedRequantize(() => this.workers.readyConnections(), (err) => toAdminError(err)).run(add, remove, onProgress);
  }
}

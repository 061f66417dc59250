/**
 * One re-quantization per checkpoint store (store-groups.ts): the group's quantizer runs `Requantize` and
 * stages each finished layer in the shared store; as soon as it reports STAGE_PLANNED (the task set it
 * produces), every other worker of the group is asked to `FollowCheckpoint` that set, i.e. to swap each staged
 * layer in between its steps. The run counts as done when every ready worker of the group reports the new
 * version in GetInfo; a worker still behind (it missed the run, its follow failed) is asked to follow again,
 * which catches it up from the published version. Still behind after that: UNAVAILABLE (BullMQ retries the
 * step; every call is idempotent, so the retry attaches to what is running or finds it done).
 */
import { ClientReadableStream, ServiceError, status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { WorkerConnection } from '../workers/worker-connection';
import { StoreGroup, storeGroups, WorkerWithInfo } from './store-groups';

export type WorkerRole = 'quantizer' | 'follower';
export type ProgressSink = (p: worker.RequantizeProgress, addr: string, role: WorkerRole) => Promise<void>;

export interface QuantTaskSpec {
  readonly name: string;
  readonly adapterPath: string;
  readonly calibrationPath: string;
}

/** Catch-up rounds for workers still behind once the quantizer is done. */
const CONFIRM_ROUNDS = 2;
const { STAGE_PLANNED, STAGE_DONE, STAGE_FAILED } = worker.RequantizeProgress_Stage;

type AdminError = (err: unknown) => InlaidError;

interface Following {
  readonly done: Promise<worker.RequantizeProgress>;
  cancel(): void;
}

/**
 * Feeds every event of a progress stream to `onProgress` (in order) and resolves with the DONE event;
 * rejects with INTERNAL on FAILED, UNAVAILABLE if the stream ends without a final event, or the mapped error.
 */
export function consumeProgress(
  call: ClientReadableStream<worker.RequantizeProgress>,
  what: string,
  onProgress: (p: worker.RequantizeProgress) => Promise<void>,
  toError: AdminError,
): Promise<worker.RequantizeProgress> {
  return new Promise((resolve, reject) => {
    let chain = Promise.resolve();
    let final: worker.RequantizeProgress | null = null;
    call.on('data', (p: worker.RequantizeProgress) => {
      if (p.stage === STAGE_DONE || p.stage === STAGE_FAILED) final = p;
      chain = chain.then(() => onProgress(p)).catch(() => undefined);
    });
    call.on('error', (err: ServiceError) => reject(toError(err)));
    call.on('end', () => {
      void chain.then(() => {
        if (final === null) return reject(InlaidError.unavailable(`${what} ended its stream early`));
        if (final.stage === STAGE_FAILED) return reject(new InlaidError(status.INTERNAL, `${what} failed: ${final.message}`));
        resolve(final);
      });
    });
  });
}

export class SharedRequantize {
  constructor(
    private readonly ready: () => WorkerConnection[],
    private readonly toError: AdminError,
  ) {}

  /**
   * One run per store group, groups one after the other; resolves with the last group's DONE event. Workers
   * without a quantized checkpoint (no store) are left out; if no worker has one, the first is asked anyway
   * and answers FAILED_PRECONDITION (the step is then skipped).
   */
  async run(add: readonly QuantTaskSpec[], remove: readonly string[], onProgress: ProgressSink): Promise<worker.RequantizeProgress> {
    const workers = await Promise.all(this.ready().map((c) => withInfo(c, this.toError)));
    const groups = storeGroups(workers);
    const withStore = groups.filter((g) => g.storeId !== null);
    let last: worker.RequantizeProgress | null = null;
    for (const g of withStore.length > 0 ? withStore : groups.slice(0, 1)) last = await this.runGroup(g, add, remove, onProgress);
    if (last === null) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    return last;
  }

  private async runGroup(
    g: StoreGroup<WorkerConnection>,
    add: readonly QuantTaskSpec[],
    remove: readonly string[],
    onProgress: ProgressSink,
  ): Promise<worker.RequantizeProgress> {
    const follows: Following[] = [];
    const startFollowers = (tasks: readonly string[]) => {
      if (follows.length > 0 || tasks.length === 0) return;
      for (const f of g.followers) follows.push(this.follow(f.conn, tasks, onProgress));
    };
    const q = g.quantizer;
    const req: worker.RequantizeRequest = { add: add.map((t) => ({ ...t })), remove: [...remove] };
    let done: worker.RequantizeProgress;
    try {
      done = await consumeProgress(q.conn.rpc.requantize(req), `re-quantization on ${q.addr}`, async (p) => {
        if (p.stage === STAGE_PLANNED) startFollowers(p.tasks);
        await onProgress(p, q.addr, 'quantizer');
      }, this.toError);
    } catch (err) {
      for (const f of follows) f.cancel(); // their jobs go on on the workers: a retry attaches to them
      await Promise.allSettled(follows.map((f) => f.done));
      throw err;
    }
    startFollowers(done.tasks); // nothing to re-quantize (already published): the followers catch up from the store
    await Promise.allSettled(follows.map((f) => f.done));
    if (g.storeId !== null) await this.confirm(g.storeId, done, onProgress);
    return done;
  }

  /** Every ready worker of the store serves `done`'s version; laggards are asked to follow again. */
  private async confirm(storeId: string, done: worker.RequantizeProgress, onProgress: ProgressSink): Promise<void> {
    for (let round = 0; ; round++) {
      const behind: WorkerConnection[] = [];
      for (const c of this.ready()) {
        const info = await c.getInfo().catch(() => null);
        if (info?.checkpoint?.storeId !== storeId) continue; // gone, or another store
        if (info.checkpoint.version < done.checkpointVersion) behind.push(c);
      }
      if (behind.length === 0) return;
      if (round >= CONFIRM_ROUNDS) {
        throw InlaidError.unavailable(`workers ${behind.map((c) => c.addr).join(', ')} do not serve checkpoint v${done.checkpointVersion} yet`);
      }
      await Promise.allSettled(behind.map((c) => this.follow(c, done.tasks, onProgress).done));
    }
  }

  private follow(c: WorkerConnection, tasks: readonly string[], onProgress: ProgressSink): Following {
    const call = c.rpc.followCheckpoint({ tasks: [...tasks] });
    const done = consumeProgress(call, `following on ${c.addr}`, (p) => onProgress(p, c.addr, 'follower'), this.toError);
    done.catch(() => undefined); // settled by the caller (allSettled); never an unhandled rejection
    return { done, cancel: () => call.cancel() };
  }
}

async function withInfo(c: WorkerConnection, toError: AdminError): Promise<WorkerWithInfo<WorkerConnection>> {
  const info = await c.getInfo().catch((err: unknown) => {
    throw toError(err);
  });
  return { conn: c, addr: c.addr, storeId: info.checkpoint?.storeId || null, version: info.checkpoint?.version ?? null };
}

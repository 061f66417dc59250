import { status } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { EventEmitter } from 'node:events';
import { InlaidError } from '../common/inlaid-error';
import type { WorkerConnection } from '../workers/worker-connection';
import { SharedRequantize, WorkerRole } from './shared-requantize';
import { storeGroups } from './store-groups';
import { workerQuantProgress } from './worker-quant-progress';

const { STAGE_PLANNED, STAGE_LAYER, STAGE_DONE, STAGE_FAILED } = worker.RequantizeProgress_Stage;
const TASKS = ['a', 'b', 'c'];

function ev(stage: worker.RequantizeProgress_Stage, extra: Partial<worker.RequantizeProgress> = {}): worker.RequantizeProgress {
  return { stage, layer: 0, numLayers: 0, hessianSeconds: 0, swapSeconds: 0, checkpointVersion: 0, tasks: [], message: '', added: [], removed: [], ...extra };
}

class FakeStream extends EventEmitter {
  cancelled = false;
  cancel(): void {
    this.cancelled = true;
    this.emit('error', { code: status.CANCELLED, details: 'cancelled' });
  }
  play(events: worker.RequantizeProgress[]): void {
    setImmediate(() => {
      for (const e of events) this.emit('data', e);
      this.emit('end');
    });
  }
}

/** A worker: its GetInfo checkpoint status and what its streams play. */
class FakeWorker {
  version = 1;
  requantizeCalls = 0;
  follows: string[][] = [];
  streams: FakeStream[] = [];
  constructor(
    readonly addr: string,
    readonly storeId: string,
    private readonly onRequantize: (s: FakeStream, w: FakeWorker) => void = () => undefined,
    private readonly onFollow: (s: FakeStream, w: FakeWorker) => void = () => undefined,
  ) {}
  asConn(): WorkerConnection {
    const rpc = {
      requantize: () => {
        this.requantizeCalls++;
        const s = new FakeStream();
        this.streams.push(s);
        this.onRequantize(s, this);
        return s;
      },
      followCheckpoint: (req: worker.FollowRequest) => {
        this.follows.push(req.tasks);
        const s = new FakeStream();
        this.streams.push(s);
        this.onFollow(s, this);
        return s;
      },
    };
    const info = async () => ({ checkpoint: { version: this.version, storeId: this.storeId } });
    return { addr: this.addr, rpc, getInfo: info } as unknown as WorkerConnection;
  }
}

const toError = (err: unknown) => (err instanceof InlaidError ? err : InlaidError.unavailable(String((err as { details?: string }).details ?? err)));

function quantizerRun(s: FakeStream, w: FakeWorker): void {
  s.play([ev(STAGE_PLANNED, { tasks: TASKS }), ev(STAGE_LAYER, { layer: 0, numLayers: 2 }), ev(STAGE_LAYER, { layer: 1, numLayers: 2 }), ev(STAGE_DONE, { checkpointVersion: 2, tasks: TASKS })]);
  w.version = 2;
}

function followerRun(s: FakeStream, w: FakeWorker): void {
  s.play([ev(STAGE_PLANNED, { tasks: TASKS, checkpointVersion: 2 }), ev(STAGE_LAYER, { layer: 0, numLayers: 2 }), ev(STAGE_LAYER, { layer: 1, numLayers: 2 }), ev(STAGE_DONE, { checkpointVersion: 2, tasks: TASKS })]);
  w.version = 2;
}

function collect(): { seen: Array<[string, WorkerRole, worker.RequantizeProgress_Stage]>; sink: (p: worker.RequantizeProgress, addr: string, role: WorkerRole) => Promise<void> } {
  const seen: Array<[string, WorkerRole, worker.RequantizeProgress_Stage]> = [];
  return { seen, sink: async (p, addr, role) => void seen.push([addr, role, p.stage]) };
}

describe('store groups', () => {
  it('puts workers of one store together, the first in WORKER_ADDRS order quantizing', () => {
    const w = (addr: string, storeId: string | null) => ({ conn: addr, addr, storeId, version: 0 });
    const groups = storeGroups([w('a', 's1'), w('b', null), w('c', 's1'), w('d', 's2')]);
    expect(groups.map((g) => [g.quantizer.addr, g.followers.map((f) => f.addr)])).toEqual([['a', ['c']], ['b', []], ['d', []]]);
  });
});

describe('shared re-quantization', () => {
  it('runs one quantizer per store and has the other worker follow its task set', async () => {
    const a = new FakeWorker('a', 's1', quantizerRun);
    const b = new FakeWorker('b', 's1', quantizerRun, followerRun);
    const { seen, sink } = collect();
    const done = await new SharedRequantize(() => [a.asConn(), b.asConn()], toError).run([], ['x'], sink);
    expect(done.checkpointVersion).toBe(2);
    expect([a.requantizeCalls, b.requantizeCalls]).toEqual([1, 0]);
    expect(b.follows).toEqual([TASKS]);
    expect(seen.filter(([addr]) => addr === 'b').map(([, role, st]) => [role, st])).toEqual(
      [['follower', STAGE_PLANNED], ['follower', STAGE_LAYER], ['follower', STAGE_LAYER], ['follower', STAGE_DONE]]);
  });

  it('cancels the followers and fails when the quantizer fails', async () => {
    const a = new FakeWorker('a', 's1', (s) => s.play([ev(STAGE_PLANNED, { tasks: TASKS }), ev(STAGE_FAILED, { message: 'out of memory' })]));
    const b = new FakeWorker('b', 's1', undefined, () => undefined); // follows, never finishes by itself
    const run = new SharedRequantize(() => [a.asConn(), b.asConn()], toError).run([], ['x'], collect().sink);
    await expect(run).rejects.toMatchObject({ status: status.INTERNAL, message: expect.stringMatching(/out of memory/) });
    expect(b.streams.every((s) => s.cancelled)).toBe(true);
  });

  it('asks a worker still behind to follow again, and answers UNAVAILABLE if it stays behind', async () => {
    const a = new FakeWorker('a', 's1', quantizerRun);
    const lagging = new FakeWorker('b', 's1', undefined, (s) => s.play([ev(STAGE_FAILED, { message: 'no run appeared' })]));
    const run = new SharedRequantize(() => [a.asConn(), lagging.asConn()], toError).run([], ['x'], collect().sink);
    await expect(run).rejects.toMatchObject({ status: status.UNAVAILABLE, message: expect.stringMatching(/b do not serve checkpoint v2/) });
    expect(lagging.follows.length).toBe(3); // during the run, then two catch-up rounds
    const caughtUp = new FakeWorker('b', 's1', undefined, followerRun);
    const ok = await new SharedRequantize(() => [a.asConn(), caughtUp.asConn()], toError).run([], [], collect().sink);
    expect(ok.checkpointVersion).toBe(2);
  });

  it('leaves out workers without a quantized checkpoint unless no worker has one', async () => {
    const plain = new FakeWorker('p', '', (s) => setImmediate(() => s.emit('error', { code: status.FAILED_PRECONDITION, details: 'no checkpoint' })));
    const a = new FakeWorker('a', 's1', quantizerRun);
    await new SharedRequantize(() => [plain.asConn(), a.asConn()], toError).run([], ['x'], collect().sink);
    expect([plain.requantizeCalls, a.requantizeCalls]).toEqual([0, 1]);
    const only = new SharedRequantize(() => [plain.asConn()], (err) => new InlaidError((err as { code: number }).code, 'no checkpoint'));
    await expect(only.run([], ['x'], collect().sink)).rejects.toMatchObject({ status: status.FAILED_PRECONDITION });
  });

  it('runs each store group on its own quantizer', async () => {
    const a = new FakeWorker('a', 's1', quantizerRun);
    const b = new FakeWorker('b', 's2', quantizerRun);
    await new SharedRequantize(() => [a.asConn(), b.asConn()], toError).run([], ['x'], collect().sink);
    expect([a.requantizeCalls, b.requantizeCalls, a.follows.length, b.follows.length]).toEqual([1, 1, 0, 0]);
  });
});

describe('worker progress entries', () => {
  it('tracks the latest layer and keeps the count through done', () => {
    const planned = workerQuantProgress(ev(STAGE_PLANNED, { tasks: TASKS }), 'follower', undefined);
    const layer = workerQuantProgress(ev(STAGE_LAYER, { layer: 1, numLayers: 2 }), 'follower', planned ?? undefined);
    const done = workerQuantProgress(ev(STAGE_DONE, { checkpointVersion: 3 }), 'follower', layer ?? undefined);
    expect([planned?.layersDone, layer?.layersDone, done?.layersDone, done?.numLayers, done?.checkpointVersion]).toEqual([0, 2, 2, 2, 3]);
    expect(workerQuantProgress(ev(worker.RequantizeProgress_Stage.STAGE_UNSPECIFIED), 'quantizer', undefined)).toBeNull();
  });
});

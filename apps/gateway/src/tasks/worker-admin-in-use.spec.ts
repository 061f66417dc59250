/**
 * WorkerAdminService against real grpc-js fake workers (testing/adapter-fake-worker.ts) when a worker refuses to unload
 * an adapter with requests in flight (UnloadAdapter's FAILED_PRECONDITION): a load everywhere that must replace an
 * older adapter there fails ABORTED (retried by the onboarding queue), naming the worker (UnloadFailed.inUse), after
 * loading everywhere else; an unload everywhere goes on past it and throws one error at the end; and what a load step
 * records once its replaces are done is what the workers serve. Before: FAILED_PRECONDITION (not retried: the
 * onboarding failed for good), the unload stopped at that worker (the ones after it kept the adapter), and the digest
 * recorded after a replace was the reference even when every worker served other bytes.
 */
import { status } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { startFakeWorker, type FakeWorker, type HeldAdapter } from '../testing/adapter-fake-worker';
import { eventually } from '../testing/eventually';
import { WorkersService } from '../workers/workers.service';
import { UnloadFailed, WorkerAdminService } from './worker-admin.service';

const disk = new Map<string, string>();
const D1 = '1'.repeat(64);
const D2 = '2'.repeat(64);
const D3 = '3'.repeat(64);
const OLD: HeldAdapter = { path: '/adapters/t', digest: D1 };

describe('WorkerAdminService: an adapter with requests in flight', () => {
  let b: FakeWorker;
  let a: FakeWorker;
  let workers: WorkersService;
  let admin: WorkerAdminService;
  const addr = (w: FakeWorker): string => `127.0.0.1:${w.port}`;

  /** B first in WORKER_ADDRS order (the worker the loops met first), then A; both bare. */
  beforeEach(async () => {
    disk.clear();
    [b, a] = await Promise.all([startFakeWorker(disk, 0), startFakeWorker(disk, 0)]);
    workers = new WorkersService({ workerAddrs: [addr(b), addr(a)], workerTls: null } as unknown as GatewayConfig);
    admin = new WorkerAdminService(workers);
    workers.onModuleInit();
    await eventually(() => workers.acceptingConnections().length === 2, 'both up', 5000);
  });

  afterEach(() => {
    workers.onModuleDestroy();
    a.server.forceShutdown();
    b.server.forceShutdown();
  });

  /** B holds `held` under t (refreshing the gateway's view of it). */
  async function bHolds(held: HeldAdapter, busy: boolean): Promise<void> {
    b.adapters.set('t', held);
    if (busy) b.busy.add('t');
    await workers.acceptingConnections().find((c) => c.addr === addr(b))?.refreshInfo();
  }

  it('a load everywhere that cannot replace an older adapter in use is ABORTED, naming that worker, once the others are loaded', async () => {
    disk.set('/adapters/t', D2);
    await bHolds(OLD, true);
    const err = await admin.loadEverywhere('t', '/adapters/t', { validated: D2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnloadFailed);
    // before: FAILED_PRECONDITION, which the onboarding queue does not retry (the job failed for good)
    expect([(err as UnloadFailed).status, (err as UnloadFailed).inUse]).toEqual([status.ABORTED, [addr(b)]]);
    expect((err as Error).message).toBe('The adapter `t` could not be replaced on 1 of 2 workers: an older adapter under that name has requests in flight there; retry once they finish.');
    expect(b.adapters.get('t')).toEqual(OLD); // left as it is (its catch-up holds it and retries: adapter-rewrite-onboarding.spec)
    expect(a.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });

    b.busy.clear(); // the retry, once the requests drained
    expect(await admin.loadEverywhere('t', '/adapters/t', { validated: D2 })).toBe(D2);
    expect(b.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });
  });

  it("records what the workers serve after its replaces: the only worker's replace read files changed since the validation", async () => {
    disk.set('/adapters/t', D3); // validated as D2, rewritten since
    await bHolds(OLD, false);
    a.server.forceShutdown(); // B alone
    await eventually(() => workers.acceptingConnections().length === 1, 'A down', 5000);
    expect(await admin.loadEverywhere('t', '/adapters/t', { validated: D2 })).toBe(D3); // before: D2, which B does not serve
    expect(b.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D3 });
  });

  it('an unload everywhere goes on past a worker that refuses (in use), then throws one error naming it', async () => {
    await bHolds(OLD, true);
    a.adapters.set('t', OLD);
    const err = await admin.unloadEverywhere('t').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnloadFailed);
    // FAILED_PRECONDITION, only in use (DELETE commits, and B's catch-up unloads it once they finish: delete-in-use.spec)
    expect([(err as UnloadFailed).status, (err as UnloadFailed).inUse, (err as Error).message]).toEqual([status.FAILED_PRECONDITION, [addr(b)], 't has requests in flight']);
    expect((err as UnloadFailed).onlyInUse).toBe(true);
    expect(a.unloads).toEqual(['t']); // before: the unload stopped at B, first in order, and A kept it
    expect(b.adapters.get('t')).toEqual(OLD);

    a.adapters.set('t', OLD);
    a.busy.add('t'); // both refuse: one error, both named, every message once
    const both = await admin.unloadEverywhere('t').catch((e: unknown) => e);
    expect([(both as UnloadFailed).status, (both as UnloadFailed).inUse, (both as Error).message]).toEqual([
      status.FAILED_PRECONDITION,
      [addr(b), addr(a)],
      '`t` could not be unloaded from 2 of 2 workers: t has requests in flight',
    ]);
  });

  it('a FAILED_PRECONDITION without the worker\'s in-use marker is no refusal in use', async () => {
    await bHolds(OLD, false);
    b.unmarked.add('t');
    const err = await admin.unloadEverywhere('t').catch((e: unknown) => e);
    // before: any FAILED_PRECONDITION counted as in use (a DELETE would have committed and left it to the catch-up)
    expect([(err as UnloadFailed).status, (err as UnloadFailed).inUse, (err as UnloadFailed).onlyInUse]).toEqual([status.FAILED_PRECONDITION, [], false]);
  });

  it("the validate step's unload of an older adapter answers the workers that refused it in use", async () => {
    await bHolds(OLD, true);
    a.adapters.set('t', OLD);
    await workers.acceptingConnections().find((c) => c.addr === addr(a))?.refreshInfo();
    expect(await admin.unloadOthers('t', '/adapters/t', D2)).toEqual({ unloaded: [addr(a)], inUse: [addr(b)] });
  });
});

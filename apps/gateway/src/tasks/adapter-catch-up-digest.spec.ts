/**
 * AdapterCatchUp with content digests, against real Postgres and real grpc-js fake workers whose "disk" maps an adapter
 * path to the digest of the files there now: a worker whose link was down while its task's adapter was rewritten in
 * place (the task deleted and loaded again from the same path) still holds the old bytes from the same path; the
 * catch-up replaces it (held meanwhile), as it replaces one from another path. Unknown digests (an older worker) fall
 * back to the path. Files changed again after the job's load make the catch-up's load read other bytes than the job's:
 * logged and settled, never replaced round after round. And /v1/models (WorkersService.listModels) leaves out an
 * adapter a worker holds as stale. Before, the worker served the old weights, and /v1/models listed a deleted task.
 */
import { testDatabase } from '@inlaid/db/testing';
import type { FakeWorker, HeldAdapter as Held } from '../testing/adapter-fake-worker';
import { CatchUpHarness } from '../testing/catch-up-harness';
import { eventually } from '../testing/eventually';
import type { WorkersService } from '../workers/workers.service';
import type { AdapterCatchUp } from './adapter-catch-up.service';
import type { TaskStore } from './task-store.service';
import { WorkerAdminService } from './worker-admin.service';

/** path -> the digest of the adapter files there now (what a LoadAdapter of that path reads). */
const disk = new Map<string, string>();
const D1 = '1'.repeat(64);
const D2 = '2'.repeat(64);
const D3 = '3'.repeat(64);

const db = testDatabase('inlaid_catchup_digest');

describe('AdapterCatchUp: an adapter rewritten in place at the same path', () => {
  const h = new CatchUpHarness(disk, db);
  const { start, addr, conn, caughtUp, listed, loadTask, deleteTask, holdLocks } = h;
  let a: FakeWorker;
  let b: FakeWorker;
  let workers: WorkersService;
  let admin: WorkerAdminService;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;

  /** Ends `w`'s server (its link goes down) and starts it again on its port holding `loaded`: its catch-up is due. */
  async function reconnect(w: FakeWorker, loaded: Record<string, Held>, opts: { digests?: boolean; failing?: string[] } = {}): Promise<FakeWorker> {
    w.server.forceShutdown();
    await eventually(() => conn(w) === undefined, `worker ${w.port} down`, 5000);
    return start(w.port, loaded, opts);
  }

  /**
   * One settled digest, B's for rw's job (whatever the cases before left): rw's job loaded D2 on both workers and
   * `other` served (D1); rw's files rewritten since (D3), and B back with rw's D1, replaced by what is there now.
   */
  async function settledOnB(): Promise<void> {
    disk.set('/adapters/rw', D2);
    disk.set('/adapters/other', D1);
    if ((await store.latest('other'))?.status !== 'serving') await loadTask('other', '/adapters/other');
    const rw = await store.latest('rw');
    if (rw !== null && rw.status !== 'deleted') await deleteTask('rw');
    await loadTask('rw', '/adapters/rw');
    disk.set('/adapters/rw', D3);
    b = await reconnect(b, { rw: { path: '/adapters/rw', digest: D1 } });
    await caughtUp(b, 'B caught up');
    expect(conn(b)?.adapterDigest('rw')).toBe(D3);
    expect(catchUp.settledCount).toBe(1); // older jobs' entries pruned at B's read
  }

  beforeAll(async () => {
    await h.setup();
    ({ a, b, workers, admin, store, catchUp } = h);
  });

  afterAll(() => h.teardown(a, b));

  it('records the digest of what the workers loaded, and none when they read different bytes', async () => {
    disk.set('/adapters/rw', D1);
    const id = await loadTask('rw', '/adapters/rw');
    expect((await store.get(id))?.adapterDigest).toBe(D1);
    expect(conn(a)?.adapterDigest('rw')).toBe(D1);
    await deleteTask('rw');
    // the files change between the two workers' loads: no digest is the job's (the catch-up compares paths only)
    const load = jest.spyOn(admin, 'loadOn');
    load.mockImplementation(async function (this: WorkerAdminService, ...args) {
      const out = await WorkerAdminService.prototype.loadOn.apply(this, args);
      disk.set('/adapters/rw', D2);
      return out;
    });
    try {
      const racy = await loadTask('rw', '/adapters/rw');
      expect((await store.get(racy))?.adapterDigest).toBeNull();
    } finally {
      load.mockRestore();
    }
    await deleteTask('rw');
    expect(a.adapters.size + b.adapters.size).toBe(0);
  });

  it('replaces the old adapter on a worker that missed an in-place rewrite (held meanwhile), which then serves the new bytes', async () => {
    disk.set('/adapters/rw', D1);
    await loadTask('rw', '/adapters/rw');
    b.server.forceShutdown(); // B's link goes down: it keeps what it loaded
    await eventually(() => conn(b) === undefined, 'B down', 5000);
    await deleteTask('rw'); // unloaded from A only
    disk.set('/adapters/rw', D2); // new files, same path
    const id = await loadTask('rw', '/adapters/rw');
    expect((await store.get(id))?.adapterDigest).toBe(D2);
    expect(a.adapters.get('rw')).toEqual({ path: '/adapters/rw', digest: D2 });

    catchUp.lockBusyMs = 50;
    const release = await holdLocks(['rw']); // keeps B's catch-up from deciding rw, so its hold can be seen
    try {
      b = await start(b.port, { rw: { path: '/adapters/rw', digest: D1 } }); // back, still serving the old bytes
      await eventually(() => conn(b)?.pendingFor('rw') === true && conn(b)?.adapterHold !== 'all', "rw held on B (its first read)", 5000);
      expect(conn(b)?.adapterPath('rw')).toBe('/adapters/rw'); // the same path: before, counted as loaded, never held
      expect((await workers.pick('rw')).addr).toBe(addr(a)); // its requests go to A meanwhile
      expect(listed()).toContain('rw'); // A lists it, caught up
    } finally {
      await release();
      catchUp.lockBusyMs = 1000;
    }
    await caughtUp(b, 'B caught up');
    expect(b.unloads).toEqual(['rw']);
    expect(b.loads).toEqual(['rw /adapters/rw']);
    expect(conn(b)?.adapterDigest('rw')).toBe(D2); // the new bytes
    expect(conn(b)?.pendingFor('rw')).toBe(false);
    a.server.forceShutdown(); // B alone: it serves rw, from the new files
    await eventually(() => conn(a) === undefined, 'A down', 5000);
    expect((await workers.pick('rw')).addr).toBe(addr(b));
    a = await start(a.port, { rw: { path: '/adapters/rw', digest: D2 } });
    await caughtUp(a, 'A back');
    expect(a.loads.concat(a.unloads)).toEqual([]); // the same bytes: nothing to do
  });

  it('compares paths only when the worker reports no digest (an older worker)', async () => {
    b = await reconnect(b, { rw: { path: '/adapters/rw', digest: D1 } }, { digests: false }); // old bytes, but it cannot say so
    await caughtUp(b, 'B caught up');
    expect(b.loads.concat(b.unloads)).toEqual([]); // as before digests
    b = await reconnect(b, { rw: { path: '/adapters/rw', digest: D2 } });
    await caughtUp(b, 'B back with digests');
  });

  it("settles, without a loop, a replace that reads other bytes than the job's (the files changed again since its load)", async () => {
    const warn = jest.spyOn((catchUp as unknown as { logger: { warn(m: string): void } }).logger, 'warn');
    disk.set('/adapters/other', D1);
    await loadTask('other', '/adapters/other');
    disk.set('/adapters/rw', D3); // rewritten again, no new job: the job still says D2
    try {
      // B comes back with rw's D1 and a task whose loads keep failing: its catch-up runs round after round
      b = await reconnect(b, { rw: { path: '/adapters/rw', digest: D1 } }, { failing: ['other'] });
      await eventually(() => b.loads.includes('rw /adapters/rw'), 'rw replaced on B', 5000);
      // rounds every 20-50 ms, `other` failing in each, after rw (a task that failed goes last): its third failure
      // comes after rw was decided twice more
      await eventually(() => b.failedLoads.filter((n) => n === 'other').length >= 3, "three failed loads of 'other' on B", 5000);
      expect(b.loads).toEqual(['rw /adapters/rw']); // once: before settling, every round replaced it again (D3 is not D2)
      expect(b.unloads).toEqual(['rw']);
      expect(conn(b)?.adapterDigest('rw')).toBe(D3);
      expect(conn(b)?.pendingFor('rw')).toBe(false); // its hold ended: it serves what is at the path now
      expect(catchUp.pending(addr(b))).toBe(true); // (still catching up on `other`)
      expect(warn.mock.calls.map(([m]) => String(m)).filter((m) => m.includes(`with digest ${D3}, not ${D2}`))).toHaveLength(1);
      expect(catchUp.settledCount).toBe(1); // B's rw, for this job
      b.failing.clear();
      await caughtUp(b, 'B caught up');
      // its link drops and comes back holding those bytes: settled for the job, not replaced again
      b = await reconnect(b, { rw: { path: '/adapters/rw', digest: D3 }, other: { path: '/adapters/other', digest: D1 } });
      await caughtUp(b, 'B back');
      expect(b.loads.concat(b.unloads)).toEqual([]);
      expect(catchUp.settledCount).toBe(1); // kept across B's Sessions: it still holds those bytes
    } finally {
      warn.mockRestore();
    }
  });

  it('prunes a settled digest once the worker no longer lists the task (it restarted without it)', async () => {
    await settledOnB(); // B's rw (D3) for the job
    // B restarts without rw, and its loads of rw fail for now: nothing is settled there any more
    b = await reconnect(b, { other: { path: '/adapters/other', digest: D1 } }, { failing: ['rw'] });
    await eventually(() => b.failedLoads.includes('rw'), "a failed load of rw on B", 5000);
    expect(catchUp.settledCount).toBe(0); // before the prune: B's entry stayed, for bytes B no longer held
    b.failing.clear();
    await caughtUp(b, 'B caught up');
    expect(conn(b)?.adapterDigest('rw')).toBe(D3); // loaded again from the files there now: settled anew
    expect(catchUp.settledCount).toBe(1);
  });

  it("prunes a settled digest once its task has another job, at any worker's catch-up (the jobs read are the fleet's)", async () => {
    await settledOnB();
    disk.set('/adapters/rw', D2);
    await deleteTask('rw'); // A and B up: unloaded from both
    await loadTask('rw', '/adapters/rw'); // a new job: D2 on both
    expect(catchUp.settledCount).toBe(1); // B's entry for the old job: no catch-up has read the jobs since
    a = await reconnect(a, { rw: { path: '/adapters/rw', digest: D2 }, other: { path: '/adapters/other', digest: D1 } });
    await caughtUp(a, 'A back');
    expect(a.loads.concat(a.unloads)).toEqual([]);
    expect(catchUp.settledCount).toBe(0); // B's entry: its job is not rw's live job any more
  });

  it("leaves out of /v1/models an adapter a worker holds as stale, and keeps one another, caught-up worker lists", async () => {
    // A comes back holding `gone` (its task deleted while A's link was down) and rw's old bytes; B serves rw's latest
    disk.set('/adapters/rw', D2);
    b = await reconnect(b, {}); // B bare: it loads rw (D2) and other at once
    await caughtUp(b, 'B caught up');
    expect(listed()).toEqual(['m', 'other', 'rw']);
    disk.set('/adapters/gone', D1);
    await loadTask('gone', '/adapters/gone');
    await deleteTask('gone');
    catchUp.lockBusyMs = 50;
    const release = await holdLocks(['gone', 'rw']); // A cannot decide them yet
    try {
      a = await reconnect(a, { gone: { path: '/adapters/gone', digest: D1 }, rw: { path: '/adapters/rw', digest: D1 }, other: { path: '/adapters/other', digest: D1 } });
      await eventually(() => conn(a)?.pendingFor('gone') === true && conn(a)?.adapterHold !== 'all', 'gone held on A', 5000);
      expect(conn(a)?.serves('gone')).toBe(true); // A still lists it
      expect(listed()).toEqual(['m', 'other', 'rw']); // before: 'gone' too (a deleted task); rw from B
      expect(conn(a)?.pendingFor('rw')).toBe(true);
    } finally {
      await release();
      catchUp.lockBusyMs = 1000;
    }
    await caughtUp(a, 'A caught up');
    expect({ unloads: a.unloads.sort(), loads: a.loads }).toEqual({ unloads: ['gone', 'rw'], loads: ['rw /adapters/rw'] });
    expect(listed()).toEqual(['m', 'other', 'rw']);
  });
});

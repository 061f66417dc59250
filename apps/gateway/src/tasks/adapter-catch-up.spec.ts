/**
 * AdapterCatchUp against real Postgres and real grpc-js fake workers: a worker that comes up after a task's adapter was
 * loaded (it joins late, or restarts at the same address) gets LoadAdapter for every task the database says is served
 * everywhere (a vLLM-style load, an onboarding past its load step) and that it does not list; not for a task still
 * queued, deleted, or waiting for quantization, nor one it already lists (its --adapters-dir). A failed load is retried;
 * a stopping worker gets nothing. Before, such a worker served only its --adapters-dir and the published checkpoint
 * (which holds no adapter), and a request placed there for the task failed.
 */
import { randomUUID } from 'node:crypto';
import { Server, ServerCredentials, status, type ServerDuplexStream } from '@grpc/grpc-js';
import { parseSchedulingConfig, type GatewayConfig } from '@inlaid/config';
import type { TaskJobKind, TaskJobStatus } from '@inlaid/db';
import { testDatabase } from '@inlaid/db/testing';
import { common, worker } from '@inlaid/proto';
import type { InlaidError } from '../common/inlaid-error';
import { eventually, sleep } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import { SchedulingService } from '../scheduling/scheduling.service';
import { WorkerConnection } from '../workers/worker-connection';
import { CATCH_UP_WAIT_MS, WorkersService } from '../workers/workers.service';
import { AdapterCatchUp } from './adapter-catch-up.service';
import { TaskStore } from './task-store.service';
import { WorkerAdminService } from './worker-admin.service';

type Session = ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>;

/** A fake worker: base `m` plus the adapters it holds; `loads` lists its LoadAdapter calls (`name path`). */
interface FakeWorker {
  server: Server;
  port: number;
  adapters: Set<string>;
  /** The LoadAdapter path of each adapter loaded so (WorkerInfo.adapter_paths); its --adapters-dir ones have none. */
  paths: Map<string, string>;
  loads: string[];
  /** Its UnloadAdapter calls (names). */
  unloads: string[];
  /** How long each LoadAdapter takes (ms). */
  loadDelayMs: number;
  sessions: Session[];
  /** LoadAdapter calls still to fail (UNAVAILABLE). */
  failLoads: number;
  /** Adapters it refuses for good (INVALID_ARGUMENT: e.g. made for another base); `refusals` counts those calls. */
  refuse?: Set<string>;
  refusals?: number;
  draining: boolean;
  /** GetInfo calls to fail after each LoadAdapter that loaded (UNAVAILABLE: the gateway's re-read of its list fails). */
  infoFailsAfterLoad?: number;
  failInfos?: number;
}

function fakeWorker(fields: Omit<FakeWorker, 'server'>): FakeWorker {
  const server = new Server();
  const w: FakeWorker = { ...fields, server }; // the handlers read this object: the spec's changes reach them
  const getInfo = (_call: unknown, cb: (e: Partial<Error & { code: number }> | null, r?: worker.WorkerInfo) => void) => {
    if ((w.failInfos ?? 0) > 0) return void ((w.failInfos = (w.failInfos ?? 0) - 1), cb({ code: status.UNAVAILABLE, message: 'busy' }));
    const models = [{ id: 'm', parent: '' }, ...[...w.adapters].map((id) => ({ id, parent: 'm' }))];
    cb(null, worker.WorkerInfo.fromPartial({ workerId: `w${w.port}`, baseModel: 'm', models, state: { draining: w.draining, totalKvBlocks: 64, freeKvBlocks: 64, blockSize: 16 }, adapterPaths: Object.fromEntries(w.paths) }));
  };
  const session = (call: Session) => {
    w.sessions.push(call);
    call.on('error', () => undefined);
  };
  const loadAdapter = (call: { request: worker.LoadAdapterRequest }, cb: (e: Partial<Error & { code: number }> | null, r?: common.ModelCard) => void) => {
    const { name, path } = call.request;
    if (w.failLoads > 0) return void (w.failLoads--, cb({ code: status.UNAVAILABLE, message: 'busy' }));
    if (w.refuse?.has(name)) return void ((w.refusals = (w.refusals ?? 0) + 1), cb({ code: status.INVALID_ARGUMENT, message: `${name}: wrong base` }));
    if (w.adapters.has(name)) return cb({ code: status.ALREADY_EXISTS, message: `${name} exists` });
    setTimeout(() => {
      w.loads.push(`${name} ${path}`);
      w.adapters.add(name);
      w.paths.set(name, path);
      w.failInfos = (w.failInfos ?? 0) + (w.infoFailsAfterLoad ?? 0);
      cb(null, common.ModelCard.fromPartial({ id: name, parent: 'm' }));
    }, w.loadDelayMs);
  };
  const unloadAdapter = (call: { request: worker.UnloadAdapterRequest }, cb: (e: Partial<Error & { code: number }> | null, r?: worker.UnloadAdapterResponse) => void) => {
    const { name } = call.request;
    if (!w.adapters.delete(name)) return cb({ code: status.NOT_FOUND, message: `${name} unknown` });
    w.paths.delete(name);
    w.unloads.push(name);
    cb(null, worker.UnloadAdapterResponse.fromPartial({}));
  };
  server.addService(worker.WorkerService, { getInfo, session, loadAdapter, unloadAdapter } as unknown as worker.WorkerServer);
  return w;
}

/**
 * Starts a fake worker on `port` (0: a free one) holding `adapters` (its --adapters-dir), and those of `loaded` as
 * LoadAdapter loaded them (name -> path: a gateway loaded them before its link went down).
 */
async function start(port: number, adapters: string[] = [], loaded: Record<string, string> = {}): Promise<FakeWorker> {
  const w = fakeWorker({
    port, adapters: new Set([...adapters, ...Object.keys(loaded)]), paths: new Map(Object.entries(loaded)), loads: [], unloads: [], loadDelayMs: 0,
    sessions: [], failLoads: 0, draining: false,
  });
  w.port = port === 0
    ? await bindLocal(w.server)
    : await new Promise<number>((resolve, reject) => w.server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return w;
}

const db = testDatabase('inlaid_catchup');

/** Counts the tries of `task`'s lock through `store` (each of locked()'s polls; the store's own, not other queries); stop() ends the count. */
function countLockTries(store: TaskStore, task: string): { n: () => number; stop: () => void } {
  const spy = jest.spyOn(store as unknown as { tryLocked(task: string, ...rest: unknown[]): Promise<unknown> }, 'tryLocked');
  return { n: () => spy.mock.calls.filter(([t]) => t === task).length, stop: () => spy.mockRestore() };
}

/** Waits until `n()` stays the same for `quietMs` (at most `withinMs`): a try under way has ended. */
async function quiet(n: () => number, quietMs: number, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  for (let last = n(); Date.now() < end; last = n()) {
    await sleep(quietMs);
    if (n() === last) return;
  }
  throw new Error(`still counting after ${withinMs} ms`);
}

describe('AdapterCatchUp: a worker that comes up without the tasks loaded meanwhile', () => {
  let a: FakeWorker;
  let b: FakeWorker;
  let bPort: number;
  let workers: WorkersService;
  let admin: WorkerAdminService;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;
  const addr = (port: number): string => `127.0.0.1:${port}`;

  async function job(task: string, kind: TaskJobKind, jobStatus: TaskJobStatus, stages: Record<string, 'done' | 'running'> = {}, waitForQuantization = false, adapterPath = `/adapters/${task}`): Promise<void> {
    const id = randomUUID();
    await store.create({ id, task, kind, status: jobStatus, adapterPath, calibrationPath: null, slo: null, waitForQuantization, message: 'test' });
    for (const [stage, s] of Object.entries(stages)) await (s === 'done' ? store.stageFinished(id, stage, 'done') : store.stageStarted(id, stage));
  }

  /** Ends `w`'s server (the worker stops) and starts `next` on its port. */
  async function restart(w: FakeWorker, adapters: string[], tweak: (n: FakeWorker) => void = () => undefined, loaded: Record<string, string> = {}): Promise<FakeWorker> {
    w.server.forceShutdown();
    const next = await start(w.port, adapters, loaded);
    tweak(next);
    await eventually(() => next.sessions.length === 1, `worker ${w.port} back`, 5000); // its Session is up: its catch-up is due
    return next;
  }

  beforeAll(async () => {
    store = new TaskStore(db());
    a = await start(0);
    const reserved = await start(0); // B's address, not serving yet: B joins later
    bPort = reserved.port;
    reserved.server.forceShutdown();
    workers = new WorkersService({ workerAddrs: [addr(a.port), addr(bPort)], workerTls: null } as unknown as GatewayConfig);
    admin = new WorkerAdminService(workers);
    catchUp = new AdapterCatchUp(workers, store, admin);
    catchUp.retry = { baseMs: 20, maxMs: 50 };
    workers.onModuleInit();
    catchUp.onModuleInit(); // as Nest: the workers' module first
    await eventually(() => workers.acceptingConnections().length === 1 && !catchUp.pending(addr(a.port)), 'A up and caught up', 3000);
  });

  afterAll(() => {
    catchUp?.onModuleDestroy();
    workers?.onModuleDestroy();
    a?.server.forceShutdown();
    b?.server.forceShutdown();
  });

  const caughtUp = (w: FakeWorker, what: string) =>
    eventually(() => workers.acceptingConnections().some((c) => c.addr === addr(w.port)) && !catchUp.pending(addr(w.port)), what, 5000);

  it('a worker joining later gets LoadAdapter for the tasks loaded on the others, and only those', async () => {
    expect(a.loads).toEqual([]); // nothing in the database yet
    await job('sql', 'load', 'serving'); // POST /v1/load_lora_adapter
    await admin.loadEverywhere('sql', '/adapters/sql');
    await job('chat', 'onboard', 'quantizing', { validate: 'done', load: 'done' }); // served on the current base, not re-quantized yet
    await admin.loadEverywhere('chat', '/adapters/chat');
    await job('later', 'onboard', 'queued'); // not validated yet
    await job('wait', 'onboard', 'quantizing', { validate: 'done', requantize: 'running' }, true); // wait_for_quantization: not loaded yet
    await job('gone', 'load', 'deleted');
    expect(a.loads).toEqual(['sql /adapters/sql', 'chat /adapters/chat']);

    b = await start(bPort);
    await caughtUp(b, 'B up and caught up');
    expect(b.loads.sort()).toEqual(['chat /adapters/chat', 'sql /adapters/sql']); // before: none
    const conn = workers.acceptingConnections().find((c) => c.addr === addr(bPort));
    expect(conn?.serves('sql') && conn.serves('chat')).toBe(true); // its model list re-read: placement sees them
    expect(a.loads).toHaveLength(2); // A listed both: no call
  });

  it('loads nothing onto a worker that already lists the tasks, and catches up one restarted at the same address', async () => {
    await job('done', 'onboard', 'active', { validate: 'done', requantize: 'done', activate: 'done' }, true); // in a checkpoint, activated
    await admin.loadEverywhere('done', '/adapters/done');
    b = await restart(b, ['sql', 'chat', 'done']); // its --adapters-dir holds them
    a = await restart(a, []); // restarted bare
    await caughtUp(b, 'B back');
    await caughtUp(a, 'A back');
    expect(b.loads).toEqual([]);
    expect(a.loads.sort()).toEqual(['chat /adapters/chat', 'done /adapters/done', 'sql /adapters/sql']);
  });

  it('retries a failed load, and leaves a stopping worker alone', async () => {
    a = await restart(a, [], (n) => (n.failLoads = 2));
    b = await restart(b, [], (n) => (n.draining = true));
    await caughtUp(a, 'A caught up after the failures');
    expect(a.failLoads).toBe(0);
    expect(a.loads.sort()).toEqual(['chat /adapters/chat', 'done /adapters/done', 'sql /adapters/sql']);
    await eventually(() => workers.readyConnections().some((c) => c.addr === addr(bPort)) && !catchUp.pending(addr(bPort)), 'B seen stopping', 5000);
    expect(b.loads).toEqual([]);
  });

  it('decides under the task lock: a task deleted while the catch-up waits for its lock is not loaded', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const deletion = store.locked('chat', async (tx) => { // as DELETE: its unload skipped B, which was not up yet
      entered();
      await held;
      const latest = await tx.latest('chat');
      await tx.transition(latest?.id ?? '', 'deleted', 'deleted by the client; adapter unloaded');
    });
    await inLock;
    b = await restart(b, []);
    await sleep(200);
    expect(b.loads).toEqual([]); // waiting for chat's lock (the first in order)
    expect(catchUp.pending(addr(bPort))).toBe(true);
    release();
    await deletion;
    await caughtUp(b, 'B caught up after the deletion');
    expect(b.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql']); // before the re-read: chat too, served after its DELETE
  });
  it('catches up a worker whose Session came up before the catch-up started listening (gateway start-up order)', async () => {
    const late = new AdapterCatchUp(workers, store, admin);
    late.retry = { baseMs: 20, maxMs: 50 };
    a = await restart(a, []); // A back bare; its 'up' fired before `late` listens (another module's start-up in between)
    await caughtUp(a, 'A caught up by the first catch-up'); // (the running one; reset A's record of loads for `late`)
    a.loads.length = 0;
    a.adapters.clear();
    for (const c of workers.acceptingConnections()) if (c.addr === addr(a.port)) await c.refreshInfo();
    late.onModuleInit(); // before: only an 'up' after this call was caught up, so A got nothing from it
    await eventually(() => !late.pending(addr(a.port)) && a.loads.length > 0, 'A caught up by the late one', 5000);
    expect(a.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql']);
    late.onModuleDestroy();
  });
  it('stops retrying a load the worker refuses for good until the task changes, and still loads the others', async () => {
    const conn = workers.connections().find((c) => c.addr === addr(bPort)) as WorkerConnection;
    const heldAfterRefusal: string[] = []; // sql held again once B refused it (each hold B's catch-up set, recorded)
    const hold = jest.spyOn(conn, 'holdAdapters').mockImplementation(function (this: WorkerConnection, h) {
      if ((b.refusals ?? 0) > 0 && h instanceof Set && h.has('sql')) heldAfterRefusal.push([...h].join());
      return WorkerConnection.prototype.holdAdapters.call(this, h);
    });
    try {
      b = await restart(b, [], (n) => (n.refuse = new Set(['sql'])));
      await caughtUp(b, 'B caught up apart from the refused task');
    } finally {
      hold.mockRestore();
    }
    expect(heldAfterRefusal).toEqual([]); // before: ['sql'] at the retry (its requests waited instead of the 404)
    expect(b.loads.sort()).toEqual(['done /adapters/done']);
    const refusals = b.refusals ?? 0;
    expect(refusals).toBeGreaterThanOrEqual(1);
    expect(refusals).toBeLessThanOrEqual(2); // the first run and at most one retry, which finds it refused for this job
    await sleep(300); // retries would be every 20-50 ms here
    expect(b.refusals).toBe(refusals);
  });

  it('holds requests for a task until the worker catching up on it has loaded it: no 404 in between, and 503 past the bound', async () => {
    b.server.forceShutdown(); // A alone: no other worker lists the tasks
    await eventually(() => workers.acceptingConnections().length === 1, 'B gone', 5000);
    const atUp: string[] = [];
    workers.onLink((c, e) => {
      if (e === 'up' && c.addr === addr(a.port)) atUp.push(`sql held ${c.pendingFor('sql')}, base held ${c.pendingFor('m')}`);
    });
    a = await restart(a, [], (n) => (n.loadDelayMs = 300)); // A restarts bare; each load takes 300 ms
    expect(atUp).toEqual(['sql held true, base held false']); // held from its Session's start, before any listener
    const base = workers.pick('m'); // the base model is not held
    const sql = workers.pick('sql'); // before: A at once (the only ready worker), whose Prepare answered 404
    const order: string[] = [];
    const [forBase, forSql] = await Promise.all([base.then((c) => (order.push('m'), c)), sql.then((c) => (order.push('sql'), c))]);
    expect(order).toEqual(['m', 'sql']);
    expect(forBase.addr).toBe(addr(a.port));
    expect(forSql.addr).toBe(addr(a.port));
    expect(forSql.serves('sql') && !forSql.pendingFor('sql')).toBe(true); // loaded there before the request went there
    await caughtUp(a, 'A caught up');

    // a load that keeps failing: held through its first failure (the retry may load it), so a request waits for
    // catchUpWaitMs, then a 503 (not the 404 of a worker without it); at its second failure in a row the hold ends and
    // the worker serves what it lists (before: every request waited 30 s for a 503 for as long as the failures went on)
    catchUp.retry = { baseMs: 600, maxMs: 600 };
    a = await restart(a, [], (n) => (n.failLoads = 1_000_000));
    workers.catchUpWaitMs = 200;
    try {
      await eventually(() => a.failLoads < 1_000_000, 'a first load failed', 3000);
      const err = await workers.pick('sql').then(() => null, (e: unknown) => e as InlaidError);
      expect(err?.status).toBe(status.UNAVAILABLE);
      expect(err?.message).toBe('The model is still being loaded onto the workers; retry shortly.');
      expect((await workers.pick('m')).addr).toBe(addr(a.port));
      expect((await workers.pick('nope').catch(() => null))?.addr).toBe(addr(a.port)); // no job: not held, its Prepare's 404 stands
      workers.catchUpWaitMs = 3000;
      const t0 = Date.now();
      expect((await workers.pick('sql')).addr).toBe(addr(a.port)); // the retry failed too: released (its Prepare's 404)
      expect(Date.now() - t0).toBeLessThan(2000);
      const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
      expect(catchUp.pending(addr(a.port))).toBe(true); // still retried
      a.failLoads = 0;
      catchUp.retry = { baseMs: 20, maxMs: 50 };
      await conn.refreshInfo(); // its next report: the catch-up runs again
    } finally {
      workers.catchUpWaitMs = CATCH_UP_WAIT_MS;
      catchUp.retry = { baseMs: 20, maxMs: 50 };
      a.failLoads = 0;
    }
    await caughtUp(a, 'A caught up once its loads succeed');
    expect(a.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql']);
  });

  it('holds only tasks the fleet serves: not one whose job is queued or waiting for quantization (their 404 at once)', async () => {
    a = await restart(a, [], (n) => (n.loadDelayMs = 300));
    const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
    await eventually(() => conn.adapterHold !== 'all', 'the hold narrowed by the read', 3000);
    expect(conn.pendingFor('sql') && conn.pendingFor('done')).toBe(true); // served everywhere, loaded one after the other
    expect(conn.pendingFor('later')).toBe(false); // queued; before: held (its requests waited, then 503 past 30 s)
    expect(conn.pendingFor('wait')).toBe(false); // wait_for_quantization, not activated yet: no worker serves it
    expect((await workers.pick('later')).addr).toBe(addr(a.port)); // at once: its Prepare's 404, as on every worker
    await caughtUp(a, 'A caught up');
  });

  it("keeps the hold until the gateway's own model list shows the load (a failed re-read is not a load seen)", async () => {
    const early: string[] = [];
    const watch = (c: WorkerConnection, e: string): void => {
      if (c.addr !== addr(a.port) || e !== 'info' || c.adapterHold === 'all') return;
      for (const t of ['done', 'sql']) if (!c.pendingFor(t) && !c.serves(t) && catchUp.pending(c.addr)) early.push(t);
    };
    workers.onLink(watch);
    a = await restart(a, [], (n) => (n.infoFailsAfterLoad = 1)); // after each load, the gateway's GetInfo fails once
    await caughtUp(a, 'A caught up');
    const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
    expect(early).toEqual([]); // before: ['done', 'sql'], released with the list from before their loads
    expect(conn.serves('sql') && conn.serves('done')).toBe(true);
    expect(conn.adapterPath('sql')).toBe('/adapters/sql');
    a.infoFailsAfterLoad = 0;
  });

  it("ends a task's hold at once when its locked section fails on the database's side (not after a retry)", async () => {
    // a name Postgres refuses (a NUL byte: its lock query fails), held by the worker from a LoadAdapter path no job has
    const odd = 'odd\u0000name';
    catchUp.retry = { baseMs: 2000, maxMs: 2000 };
    workers.catchUpWaitMs = 1500;
    try {
      a = await restart(a, [], () => undefined, { [odd]: '/adapters/odd' });
      const t0 = Date.now();
      expect((await workers.pick(odd)).addr).toBe(addr(a.port)); // before: held until the retry's failure (2 s here)
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(catchUp.pending(addr(a.port))).toBe(true); // still retried
    } finally {
      catchUp.retry = { baseMs: 20, maxMs: 50 };
      workers.catchUpWaitMs = CATCH_UP_WAIT_MS;
    }
    a = await restart(a, []);
    await caughtUp(a, 'A caught up');
  });

  it("keeps a task held while its lock is only busy elsewhere (not a database failure), and goes on with the others", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const stuck = store.locked('done', async () => { // done's lock held elsewhere (a load everywhere, a DELETE, a load step)
      entered();
      await held;
    });
    await inLock;
    catchUp.sectionQueryMs = 300; // each round trip to Postgres answers well within it
    catchUp.lockBusyMs = 200;
    try {
      a = await restart(a, []);
      const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
      // done's section (first in order) waits on its lock past sectionQueryMs, gives way, and sql is loaded meanwhile;
      // before: past the 300 ms the whole hold ended (as if Postgres did not answer), done's requests went to A (its
      // 404) and done was not held again in this Session
      await eventually(() => a.loads.includes('sql /adapters/sql'), 'sql loaded while done waits', 3000);
      expect(a.loads).toEqual(['sql /adapters/sql']);
      await sleep(600); // a few tries of done's lock, each past lockBusyMs, with the retries in between
      expect(conn.adapterHold).not.toBeNull();
      expect(conn.pendingFor('done')).toBe(true); // still held: its requests wait for the load
      expect(conn.pendingFor('sql')).toBe(false);
      expect(catchUp.pending(addr(a.port))).toBe(true); // done still to load
      const forDone = workers.pick('done');
      await sleep(100);
      release();
      await stuck;
      expect((await forDone).addr).toBe(addr(a.port));
      expect(conn.serves('done')).toBe(true); // loaded there before the request went there
    } finally {
      release();
      await stuck;
      catchUp.sectionQueryMs = 10_000;
      catchUp.lockBusyMs = 1000;
    }
    await caughtUp(a, 'A caught up once the lock is free');
    expect(a.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql']);
  });

  it("ends the hold of a task whose lock stays busy past busyHoldMs, then retries it with one lock try a round and a growing backoff, and loads it once free", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const stuck = store.locked('done', async () => { // done's lock kept elsewhere (a stuck load everywhere, a slow DELETE)
      entered();
      await held;
    });
    await inLock;
    catchUp.lockBusyMs = 100;
    catchUp.busyHoldMs = 2000;
    catchUp.retry = { baseMs: 50, maxMs: 400 };
    const attempt = (): number | undefined => (catchUp as unknown as { due: Map<string, { attempt: number }> }).due.get(addr(a.port))?.attempt;
    // the busyMs of each of done's sections (the store's own locked(), called through)
    const locks = jest.spyOn(store, 'locked');
    const doneBusyMs = (): Array<number | undefined> => locks.mock.calls.filter(([t]) => t === 'done').map(([, , o]) => o?.busyMs);
    try {
      const t0 = Date.now();
      a = await restart(a, []);
      const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
      await eventually(() => a.loads.includes('sql /adapters/sql'), 'sql loaded while done waits', 3000);
      expect(conn.pendingFor('done')).toBe(true); // held while its lock is busy for less than busyHoldMs
      await sleep(300); // rounds that only found done's lock busy, done still held
      expect(attempt()).toBe(0); // the backoff does not grow while done is held (the holder ends soon)
      // before: held for the rest of the Session (its requests waited catchUpWaitMs for a 503, for as long as the lock was kept)
      await eventually(() => !conn.pendingFor('done'), "done's hold ended past busyHoldMs", 6000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1800);
      expect(catchUp.pending(addr(a.port))).toBe(true); // still retried
      await sleep(600); // more rounds that only found done's lock busy
      expect(conn.pendingFor('done')).toBe(false); // not held again in this Session
      // no busy task held any more: the backoff grows (before: it stayed at 50 ms, each round taking lockBusyMs of the
      // gateway-wide gate for as long as the lock was kept)
      expect(attempt()).toBeGreaterThan(0);
      // lockBusyMs while held, then one lock try a round, no gate time waiting (before: lockBusyMs on and on)
      const tried = doneBusyMs();
      const unheldFrom = tried.indexOf(0);
      expect(unheldFrom).toBeGreaterThan(0);
      expect(tried.slice(0, unheldFrom).every((ms) => ms === 100)).toBe(true);
      expect(tried.slice(unheldFrom).every((ms) => ms === 0)).toBe(true);
      release();
      await stuck;
      await caughtUp(a, 'A caught up once the lock is free'); // at the next round (~50 ms), not after a grown backoff
      expect(a.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql']);
    } finally {
      locks.mockRestore();
      release();
      await stuck;
      catchUp.lockBusyMs = 1000;
      catchUp.busyHoldMs = CATCH_UP_WAIT_MS;
      catchUp.retry = { baseMs: 20, maxMs: 50 };
    }
  });

  it("forgets a busy lock's start once its task is no longer to catch up (a later hold is not ended at its first busy try)", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const stuck = store.locked('sql', async () => { // sql's lock kept elsewhere: A's catch-up keeps running rounds
      entered();
      await held;
    });
    await inLock;
    catchUp.lockBusyMs = 50;
    const busyOf = (): Map<string, number> | undefined => (catchUp as unknown as { due: Map<string, { busy: Map<string, number> }> }).due.get(addr(a.port))?.busy;
    const tries = countLockTries(store, 'sql');
    try {
      // A lists done from its job's path: only sql is to catch up
      a = await restart(a, [], () => undefined, { done: '/adapters/done' });
      await eventually(() => busyOf()?.has('sql') === true, "sql's lock found busy", 3000);
      // done was found busy in an earlier round, long ago, then left the list (the holder's load reached A)
      busyOf()?.set('done', Date.now() - 10 * catchUp.busyHoldMs);
      const n = tries.n();
      await eventually(() => tries.n() >= n + 2, 'another round', 3000);
      expect(busyOf()?.has('done')).toBe(false); // before: kept, so done's next busy try (if due again) ended its hold at once
      expect(busyOf()?.has('sql')).toBe(true);
    } finally {
      tries.stop();
      catchUp.lockBusyMs = 1000;
      release();
      await stuck;
    }
    await caughtUp(a, 'A caught up once the lock is free');
    expect(a.loads).toEqual(['sql /adapters/sql']);
  });

  it("gives a task never held (its live job not served yet) one lock try when its lock is busy, and does not keep the backoff flat", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const stuck = store.locked('later', async () => { // later's lock kept elsewhere (its onboarding's own step)
      entered();
      await held;
    });
    await inLock;
    catchUp.lockBusyMs = 200;
    catchUp.busyHoldMs = 600;
    catchUp.retry = { baseMs: 50, maxMs: 400 };
    const attempt = (): number | undefined => (catchUp as unknown as { due: Map<string, { attempt: number }> }).due.get(addr(a.port))?.attempt;
    const locks = jest.spyOn(store, 'locked');
    const laterBusyMs = (): Array<number | undefined> => locks.mock.calls.filter(([t]) => t === 'later').map(([, , o]) => o?.busyMs);
    const releases = jest.spyOn(WorkerConnection.prototype, 'releaseAdapter');
    const warn = jest.spyOn((catchUp as unknown as { logger: { warn(m: string): void } }).logger, 'warn');
    try {
      // A lists done and sql from their jobs' paths: only later (queued, never held) and wait (its lock free) are to catch up
      a = await restart(a, [], () => undefined, { done: '/adapters/done', sql: '/adapters/sql' });
      const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
      await eventually(() => laterBusyMs().length >= 3, "a few rounds that found later's lock busy", 5000);
      await sleep(700); // past busyHoldMs from later's first busy try
      expect(conn.pendingFor('later')).toBe(false); // never held: its requests get their 404 at once
      // one lock try a round, no gate time waiting (before: lockBusyMs each round, as for a held task)
      expect(laterBusyMs().every((ms) => ms === 0)).toBe(true);
      // no busy task held: the backoff grows (before: it stayed flat, as while a held task's holder ends)
      expect(attempt()).toBeGreaterThan(0);
      // its hold never began, so none ends (before: past busyHoldMs, "serves what it lists" and a release of later)
      expect(warn.mock.calls.filter(([m]) => String(m).includes('later'))).toEqual([]);
      expect(releases.mock.calls.filter(([t]) => t === 'later')).toEqual([]);
      expect(catchUp.pending(addr(a.port))).toBe(true); // still retried
    } finally {
      locks.mockRestore();
      releases.mockRestore();
      warn.mockRestore();
      release();
      await stuck;
      catchUp.lockBusyMs = 1000;
      catchUp.busyHoldMs = CATCH_UP_WAIT_MS;
      catchUp.retry = { baseMs: 20, maxMs: 50 };
    }
    await caughtUp(a, 'A caught up once the lock is free');
    expect(a.loads).toEqual([]);
  });

  it("stops polling a busy task lock once the worker's Session ends (or the module stops)", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inLock = new Promise<void>((r) => (entered = r));
    const stuck = store.locked('done', async () => {
      entered();
      await held;
    });
    await inLock;
    catchUp.lockBusyMs = 60_000; // waits on for the lock: only the Session's end stops it
    const tries = countLockTries(store, 'done');
    try {
      a = await restart(a, []);
      await eventually(() => tries.n() > 3, "A's catch-up polling done's lock", 3000);
      a.server.forceShutdown(); // its Session ends
      await eventually(() => !workers.acceptingConnections().some((c) => c.addr === addr(a.port)), 'A down', 5000);
      await quiet(tries.n, 250, 3000); // a poll under way ends (polls were every <= 100 ms)
      const after = tries.n();
      await sleep(500);
      expect(tries.n()).toBe(after); // before: it went on polling (each retry adding another poller)
    } finally {
      tries.stop();
      catchUp.lockBusyMs = 1000;
      release();
      await stuck;
    }
    a = await start(a.port);
    await caughtUp(a, 'A back and caught up');
  });

  it("replaces an adapter a worker holds from an older job, unloads one whose task is not served, and routes the task elsewhere meanwhile", async () => {
    // sql's adapter is replaced (a new job, another path) while A's link is down
    b = await start(bPort);
    await caughtUp(b, 'B up and caught up');
    await store.locked('sql', async (tx) => {
      const latest = await tx.latest('sql');
      await tx.transition(latest?.id ?? '', 'deleted', 'deleted by the client; adapter unloaded');
    });
    const config = { scheduling: parseSchedulingConfig({}), workerAddrs: [addr(a.port), addr(bPort)] } as unknown as GatewayConfig;
    const scheduling = new SchedulingService(config, workers, db()); // its placement learns of B from the calls below ('info')
    await job('sql', 'load', 'serving', {}, false, '/adapters/sql-v2');
    await admin.unloadOn(workers.acceptingConnections().find((c) => c.addr === addr(bPort)) as WorkerConnection, 'sql');
    await admin.loadOn(workers.acceptingConnections().find((c) => c.addr === addr(bPort)) as WorkerConnection, 'sql', '/adapters/sql-v2');
    // A comes back holding what a gateway loaded before its link went down: sql from the old path, 'gone' (deleted
    // meanwhile), and 'own' of its --adapters-dir (no LoadAdapter path: left alone)
    a = await restart(a, ['own'], (n) => (n.loadDelayMs = 300), { sql: '/adapters/sql', gone: '/adapters/gone' });
    const conn = workers.acceptingConnections().find((c) => c.addr === addr(a.port)) as WorkerConnection;
    expect(conn.serves('sql') && conn.pendingFor('sql')).toBe(true); // listed, but from the old job: held
    // requests for sql go to B meanwhile; before: A, the first configured (its old adapter, or a 404 mid-replacement)
    expect((await workers.pick('sql')).addr).toBe(addr(bPort));
    expect(scheduling.dispatcher.placement.arrive('sql')).toBe(addr(bPort)); // placement too
    scheduling.dispatcher.placement.leave('sql');
    await caughtUp(a, 'A caught up');
    expect(a.unloads.sort()).toEqual(['gone', 'sql']); // before: none (it listed both)
    expect(a.loads.sort()).toEqual(['done /adapters/done', 'sql /adapters/sql-v2']);
    expect(conn.adapterPath('sql')).toBe('/adapters/sql-v2');
    expect(conn.serves('gone')).toBe(false);
    expect(conn.serves('own') && !conn.pendingFor('own')).toBe(true);
    expect(conn.pendingFor('sql')).toBe(false);
    expect(scheduling.dispatcher.placement.arrive('sql')).toBe(addr(a.port)); // caught up: A is a candidate again (first in order)
    scheduling.dispatcher.placement.leave('sql');
    expect(b.unloads).toEqual(['sql']); // the spec's own (as the DELETE's): B held the new one, untouched by the catch-up
  });
});

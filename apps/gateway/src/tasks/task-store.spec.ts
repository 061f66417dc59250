/**
 * TaskStore against real Postgres: the task lock (TaskStore.locked) excludes sections of the same name and only
 * those, a section's writes commit with it (or not at all when it throws), and row writes are atomic
 * read-modify-writes (concurrent appends to one row's history all survive); onboarding writes a task's `slo` into its row.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { DataSource } from 'typeorm';
import type { GatewayConfig } from '@inlaid/config';
import { createDataSource, dataSourceOptions } from '@inlaid/db';
import { testDatabase } from '@inlaid/db/testing';
import { eventually } from '../testing/eventually';
import { catchUpStub } from '../testing/catch-up-stub';
import type { worker } from '@inlaid/proto';
import { TaskSyncService } from '../records/task-sync.service';
import type { WorkersService } from '../workers/workers.service';
import type { OnboardQueues } from './onboard-queues.service';
import { OnboardSteps } from './onboard-steps';
import { CommitOutcomeUnknown, DbTimeout, dbWithin, NewTaskJob, TaskLockBusy, TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';
import type { WorkerAdminService } from './worker-admin.service';

const db = testDatabase('inlaid_taskstore');
let store: TaskStore;

beforeAll(() => {
  store = new TaskStore(db());
});

async function newJob(task: string): Promise<string> {
  const id = randomUUID();
  await store.create({ id, task, kind: 'onboard', status: 'loading', adapterPath: null, calibrationPath: null, slo: null, waitForQuantization: false, message: 'test' });
  return id;
}

/** A promise and its resolve function. */
function gate(): { open: Promise<void>; release: () => void } {
  let release!: () => void;
  const open = new Promise<void>((r) => (release = r));
  return { open, release };
}

/**
 * Runs fn against a TaskStore on `one` (a one-connection pool, not yet initialized) while a holder section (task
 * `holderName`) keeps the pool's only connection; fn's `letGo` ends the holder's section and waits for it. The
 * holder is let go and the pool destroyed afterwards, also when fn fails (the pool's end() would wait for the
 * checked-out connection).
 */
async function withHeldPool(
  one: DataSource,
  holderName: string,
  fn: (small: TaskStore, letGo: () => Promise<void>) => Promise<void>,
): Promise<void> {
  await one.initialize();
  const hold = gate();
  let holder: Promise<unknown> = Promise.resolve();
  try {
    const small = new TaskStore(one);
    const entered = gate();
    holder = small.locked(holderName, async () => {
      entered.release();
      await hold.open;
    });
    await entered.open; // the pool's only connection is taken
    await fn(small, async () => {
      hold.release();
      await holder;
    });
  } finally {
    hold.release();
    await holder.catch(() => undefined);
    await one.destroy();
  }
}

describe('TaskStore.locked', () => {
  it('runs sections of one task name one after another, and of other names alongside', async () => {
    const events: string[] = [];
    const first = gate();
    const entered = gate();
    const a = store.locked('lk', async () => {
      events.push('a in');
      entered.release();
      await first.open;
      events.push('a out');
    });
    await entered.open;
    const b = store.locked('lk', async () => void events.push('b in'));
    const other = store.locked('lk-other', async () => void events.push('other in'));
    await other; // not held up by `a`
    await sleep(300);
    expect(events).toEqual(['a in', 'other in']); // `b` is still waiting
    first.release();
    await Promise.all([a, b]);
    expect(events).toEqual(['a in', 'other in', 'a out', 'b in']);
  });

  it("commits a section's writes when it ends, and none of them when it throws", async () => {
    const id = await newJob('lw');
    const written = gate();
    const finish = gate();
    const section = store.locked('lw', async (tx) => {
      await tx.transition(id, 'quantizing', 'in the section');
      written.release();
      await finish.open;
    });
    await written.open;
    expect((await store.get(id))?.status).toBe('loading'); // not visible before the section ends
    finish.release();
    await section;
    expect((await store.get(id))?.status).toBe('quantizing');
    await expect(store.locked('lw', async (tx) => {
      await tx.transition(id, 'deleted', 'rolled back');
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect((await store.get(id))?.status).toBe('quantizing');
  });

  it('refuses to nest (a section writes through the store it is given)', async () => {
    await expect(store.locked('ln', (tx) => tx.locked('ln2', async () => 1))).rejects.toThrow(/inside another locked section/);
  });

  it('tells a lock only busy elsewhere (TaskLockBusy past busyMs) from Postgres not answering', async () => {
    const first = gate();
    const entered = gate();
    const a = store.locked('lb', async () => {
      entered.release();
      await first.open;
    });
    await entered.open;
    const t0 = Date.now();
    await expect(store.locked('lb', async () => 1, { busyMs: 200, queryMs: 1000 })).rejects.toBeInstanceOf(TaskLockBusy);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190); // it waited busyMs (each try answered well within queryMs); before: it gave up up to 100 ms early
    expect(Date.now() - t0).toBeLessThan(3000); // not a DbTimeout, nor a wait for the lock's holder
    first.release();
    await a;
    expect(await store.locked('lb', async () => 2, { busyMs: 200, queryMs: 1000 })).toBe(2);
  });

  it('stops polling a busy lock once its signal is aborted: no lock tries after that', async () => {
    const first = gate();
    const entered = gate();
    const a = store.locked('la', async () => {
      entered.release();
      await first.open;
    });
    await entered.open;
    const pool = (db().driver as unknown as { master: { on(e: 'acquire', f: () => void): void; off(e: 'acquire', f: () => void): void } }).master;
    let tries = 0;
    const count = (): void => void tries++;
    pool.on('acquire', count);
    try {
      const abandon = new AbortController();
      const waiting = store.locked('la', async () => 'ran', { signal: abandon.signal });
      await sleep(300);
      expect(tries).toBeGreaterThan(2); // polling
      abandon.abort(new Error('its Session ended'));
      await expect(waiting).rejects.toThrow('its Session ended');
      const after = tries;
      await sleep(400); // polls were every <= 100 ms
      expect(tries).toBe(after); // before: it polled on until it got the lock, then ran
    } finally {
      pool.off('acquire', count);
      first.release();
      await a;
    }
  });

  it("lets go of the task's lock within about queryMs when a section's statement waits on a lock held elsewhere", async () => {
    // another connection holds a lock the section's statement waits for (a row lock, an advisory lock)
    const other = db().createQueryRunner();
    await other.connect();
    await other.startTransaction();
    await other.query('SELECT pg_advisory_xact_lock(7001, 1)');
    try {
      const t0 = Date.now();
      const blocked = store.locked('lt', (tx) => dbWithin(tx.tasks.query('SELECT pg_advisory_xact_lock(7001, 1)'), 300, 'the blocked read'), { queryMs: 300 });
      await expect(blocked).rejects.toBeInstanceOf(DbTimeout);
      // Postgres ends the statement (statement_timeout), finds the connection dropped, and the task's lock goes with it;
      // before: the backend waited on, holding the task's lock until `other` let go (TaskLockBusy here)
      expect(await store.locked('lt', async () => 'free', { busyMs: 1500, queryMs: 1000 })).toBe('free');
      expect(Date.now() - t0).toBeLessThan(1500);
      // its backend is gone (its lock went with the aborted transaction; the session ends once Postgres writes to the
      // closed socket, which may come a little later)
      const otherPid = ((other as unknown as { databaseConnection: { processID: number } }).databaseConnection).processID;
      let left = -1;
      for (const end = Date.now() + 1000; ; await sleep(20)) {
        const [row] = (await db().query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_advisory_xact_lock(7001, 1)' AND pid <> $1 AND datname = current_database()`, [otherPid])) as Array<{ n: number }>;
        left = row?.n ?? -1;
        if (left === 0 || Date.now() > end) break;
      }
      expect(left).toBe(0);
    } finally {
      await other.rollbackTransaction();
      await other.release();
    }
  });

  it('bounds taking a pooled connection by queryMs (DbTimeout), and a connection handed over later goes back to the pool', async () => {
    await withHeldPool(createDataSource((db().options as { url: string }).url, 1), 'lp-holder', async (small, letGo) => {
      const t0 = Date.now();
      await expect(small.locked('lp', async () => 1, { queryMs: 200 })).rejects.toBeInstanceOf(DbTimeout); // before: the pool's 5 s, not a DbTimeout
      expect(Date.now() - t0).toBeLessThan(1500);
      await letGo();
      expect(await small.locked('lp', async () => 2, { queryMs: 2000 })).toBe(2); // the late connection was not kept
    });
  });

  it("turns the pool's own connect timeout (below queryMs) into a DbTimeout: the bound is the shorter of the two", async () => {
    // the pool gives up first (its connectionTimeoutMillis below queryMs, as the gateway's 5 s below the catch-up's 10 s)
    const one = new DataSource({ ...dataSourceOptions((db().options as { url: string }).url, 1), extra: { max: 1, connectionTimeoutMillis: 200 } });
    await withHeldPool(one, 'lq-holder', async (small, letGo) => {
      const t0 = Date.now();
      const err = await small.locked('lq', async () => 1, { queryMs: 5000 }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(DbTimeout); // before: the pool's plain Error('timeout exceeded when trying to connect'), one task's failure
      expect((err as Error).message).toMatch(/pooled connection/);
      expect(Date.now() - t0).toBeLessThan(3000); // the pool's 200 ms, not queryMs
      await letGo();
      expect(await small.locked('lq', async () => 2, { queryMs: 5000 })).toBe(2); // the pool still hands connections over
    });
  });

  it("hands a connection back to the pool out of its transaction when the lock's try fails (a query error)", async () => {
    const one = createDataSource((db().options as { url: string }).url, 1);
    await one.initialize();
    try {
      const small = new TaskStore(one);
      for (const opts of [{ queryMs: 1000 }, {}]) {
        await expect(small.locked('bad\u0000name', async () => 1, opts)).rejects.toThrow(/invalid byte sequence/); // Postgres refuses the name
        // the pool's only connection: before, it came back in the failed transaction ("current transaction is aborted")
        expect(await one.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
      }
    } finally {
      await one.destroy();
    }
  });

  describe('when Postgres stops answering mid-section (a proxy that stops forwarding)', () => {
    let proxy: Server;
    let frozen = false;
    const sockets: Socket[] = [];
    let slow: DataSource;
    beforeAll(async () => {
      proxy = createServer((client) => {
        const up = connect(5432, '127.0.0.1');
        sockets.push(client, up);
        client.on('error', () => undefined);
        up.on('error', () => undefined);
        client.on('data', (d) => void (frozen || up.write(d)));
        up.on('data', (d) => void (frozen || client.write(d)));
        client.on('close', () => up.destroy());
        up.on('close', () => client.destroy());
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
      const url = new URL((db().options as { url: string }).url);
      url.port = String((proxy.address() as AddressInfo).port);
      slow = createDataSource(url.toString(), 3);
      await slow.initialize();
    });
    afterAll(async () => {
      frozen = false;
      for (const s of sockets) s.destroy();
      await slow?.destroy().catch(() => undefined);
      proxy?.close();
    });

    it("bounds the ROLLBACK after a section throws (queryMs), drops the connection, and the lock goes with it", async () => {
      const slowStore = new TaskStore(slow);
      const t0 = Date.now();
      const out = slowStore.locked('lr', async () => {
        frozen = true; // Postgres stops answering just as the section fails (e.g. a worker refusal)
        throw new Error('refused');
      }, { queryMs: 300 });
      await expect(out).rejects.toBeInstanceOf(DbTimeout); // before: the ROLLBACK waited for as long as Postgres did not answer
      expect(Date.now() - t0).toBeLessThan(1500);
      // its connection was dropped, not returned to the pool in its transaction: the server let go of the lock
      await eventually(() => sockets.every((s) => s.destroyed), 'the connection closed', 3000);
      expect(await store.locked('lr', async () => 'free', { busyMs: 2000 })).toBe('free');
      frozen = false;
    });

    it('bounds the COMMIT and the lock try the same way', async () => {
      const slowStore = new TaskStore(slow);
      frozen = false;
      // a COMMIT without an answer may have committed: CommitOutcomeUnknown (a DbTimeout), for callers that write to re-read
      await expect(slowStore.locked('lc', async () => void (frozen = true), { queryMs: 300 })).rejects.toBeInstanceOf(CommitOutcomeUnknown);
      frozen = false;
      expect(await slowStore.locked('lc', async () => 1, { queryMs: 300 })).toBe(1); // a pooled connection idle again
      frozen = true;
      const t0 = Date.now();
      const early = await slowStore.locked('lc', async () => 1, { queryMs: 300 }).then(() => null, (e: unknown) => e);
      expect(early).toBeInstanceOf(DbTimeout); // BEGIN, the lock's try
      expect(early).not.toBeInstanceOf(CommitOutcomeUnknown); // nothing written yet
      expect(Date.now() - t0).toBeLessThan(1500);
      frozen = false;
      expect(await store.locked('lc', async () => 'free', { busyMs: 2000 })).toBe('free');
    });
  });
});

describe('TaskStore.update', () => {
  it('loses no concurrent write to the same row', async () => {
    const id = await newJob('up');
    const n = 24;
    await Promise.all(Array.from({ length: n }, (_, i) => store.update(id, (j) => (j.history = [...j.history, { at: new Date().toISOString(), status: 'loading', message: `w${i}` }]))));
    const j = await store.get(id);
    expect(j?.history.map((e) => e.message).filter((m) => m.startsWith('w')).sort()).toEqual(Array.from({ length: n }, (_, i) => `w${i}`).sort());
  });
});

describe('TaskStore.create and latest with the one-live-job-per-name index', () => {
  it('refuses a second live job of a name, and a newer refusal record does not hide the live job', async () => {
    const fields = { kind: 'onboard' as const, adapterPath: null, calibrationPath: null, slo: null, waitForQuantization: false, message: 'test' };
    const live = randomUUID();
    await store.create({ ...fields, id: live, task: 'race', status: 'queued' });
    await expect(store.create({ ...fields, id: randomUUID(), task: 'race', status: 'queued' })).rejects.toThrow(/already has a live job/);
    await sleep(5); // the refusal is strictly newer
    const refused = randomUUID();
    await store.create({ ...fields, id: refused, task: 'race', status: 'failed' }); // a concurrent bad upload's record
    expect((await store.latest('race'))?.id).toBe(live);
    expect((await store.listLatest()).find((j) => j.task === 'race')?.id).toBe(live);
    await expect(store.create({ ...fields, id: live, task: 'other', status: 'failed' })).rejects.toThrow(/duplicate key/); // not a taken name
  });
});

/** The tasks row after the validate step of an onboarding with `slo` (a stand-in worker validates the adapter). */
async function validated(task: string, slo: NewTaskJob['slo']): Promise<unknown> {
  const id = randomUUID();
  await store.create({ id, task, kind: 'onboard', status: 'queued', adapterPath: '/a', calibrationPath: null, slo, waitForQuantization: false, message: 'accepted' });
  const admin = { validate: async () => ({ rank: 8, targetModules: ['q_proj'] }) } as unknown as WorkerAdminService;
  expect(await new OnboardSteps({} as GatewayConfig, store, admin, catchUpStub()).run('validate', id, { report: async () => undefined })).toBe('valid');
  const [row] = await db().query(`SELECT slo_ttft_ms AS ttft, slo_tpot_ms AS tpot FROM tasks WHERE name = $1`, [task]);
  return row;
}

describe("onboarding writes the task's SLO into its row", () => {
  it('both targets, one of them (fractions kept), or none: where the scheduler and the dashboard read them', async () => {
    expect(await validated('slo-both', { ttft_ms: 500, tpot_ms: 50 })).toEqual({ ttft: 500, tpot: 50 });
    expect(await validated('slo-tpot', { tpot_ms: 12.5 })).toEqual({ ttft: null, tpot: 12.5 });
    expect(await validated('slo-none', null)).toEqual({ ttft: null, tpot: null });
  });
});

describe("a removed task's targets go with it", () => {
  const targets = async (task: string): Promise<unknown> =>
    (await db().query(`SELECT status, slo_ttft_ms AS ttft, slo_tpot_ms AS tpot FROM tasks WHERE name = $1`, [task]))[0];
  /** The adapter reported by a worker serving it from its own adapters, as TaskSyncService writes it. */
  const reported = (task: string): Promise<void> =>
    new TaskSyncService(db(), {} as WorkersService).sync(`w-${task}`, { models: [{ id: task, parent: 'base', rank: 8, targetModules: [] }] } as unknown as worker.WorkerInfo);
  const tasksService = (): TasksService => {
    const config = { tasks: { dataDir: mkdtempSync(join(tmpdir(), 'inlaid-taskstore-')) } } as unknown as GatewayConfig;
    const admin = { unloadEverywhere: async () => undefined } as unknown as WorkerAdminService;
    const workers = { readyConnections: () => [{ serves: () => true }] } as unknown as WorkersService;
    return new TasksService(config, store, admin, workers, {} as OnboardQueues, catchUpStub());
  };

  it('DELETE /v1/tasks/{name} and unload_lora_adapter clear them: the name served again has the defaults', async () => {
    expect(await validated('del-slo', { ttft_ms: 70, tpot_ms: 7 })).toEqual({ ttft: 70, tpot: 7 });
    await tasksService().delete('del-slo');
    expect(await targets('del-slo')).toEqual({ status: 'unloaded', ttft: null, tpot: null });
    await reported('del-slo');
    expect(await targets('del-slo')).toEqual({ status: 'serving', ttft: null, tpot: null });

    expect(await validated('unl-slo', { ttft_ms: 80 })).toEqual({ ttft: 80, tpot: null });
    await tasksService().unloadLora({ lora_name: 'unl-slo' });
    expect(await targets('unl-slo')).toEqual({ status: 'unloaded', ttft: null, tpot: null });
    await reported('unl-slo');
    expect(await targets('unl-slo')).toEqual({ status: 'serving', ttft: null, tpot: null });
  });
});

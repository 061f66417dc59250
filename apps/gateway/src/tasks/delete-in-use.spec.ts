/**
 * DELETE, POST /v1/unload_lora_adapter and POST /v1/load_lora_adapter (TasksService) against real Postgres, the real
 * AdapterCatchUp and real grpc-js fake workers (testing/adapter-fake-worker.ts), when a worker has requests in flight
 * for the adapter or a load fails part-way. Before: a DELETE refused in use by one worker answered 409 with the
 * deletion rolled back, while every idle worker had unloaded the task the database still said was served (nothing
 * loaded it back), and the busy worker was never held (its requests never drained, every retry got 409); a failed
 * load left the workers it had loaded fresh serving the name with no job row (the retry got 409 task_exists); and a
 * catch-up refused in use grew its backoff up to a minute and held the name for good.
 */
import { mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { testDatabase } from '@inlaid/db/testing';
import { startFakeWorker, type FakeWorker } from '../testing/adapter-fake-worker';
import { eventually } from '../testing/eventually';
import type { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { AdapterCatchUp } from './adapter-catch-up.service';
import type { OnboardQueues } from './onboard-queues.service';
import { TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';
import { WorkerAdminService } from './worker-admin.service';

const D1 = '1'.repeat(64);
const disk = new Map<string, string>();
const db = testDatabase('inlaid_delete_in_use');

describe('TasksService with an adapter in use, or a load failing part-way', () => {
  let a: FakeWorker;
  let b: FakeWorker;
  let workers: WorkersService;
  let admin: WorkerAdminService;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;
  let tasks: TasksService;
  let root: string;
  let path: string;
  const addr = (w: FakeWorker): string => `127.0.0.1:${w.port}`;
  const conn = (w: FakeWorker): WorkerConnection | undefined => workers.acceptingConnections().find((c) => c.addr === addr(w));
  const listed = (): string[] => workers.listModels().map((m) => m.id);

  /** A fresh fleet of A and B (in that order), both caught up; t's files at `path`. */
  beforeEach(async () => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'inlaid-in-use-')));
    path = join(root, 't');
    mkdirSync(path);
    disk.clear();
    disk.set(path, D1);
    store = new TaskStore(db());
    [a, b] = await Promise.all([startFakeWorker(disk, 0), startFakeWorker(disk, 0)]);
    workers = new WorkersService({ workerAddrs: [addr(a), addr(b)], workerTls: null } as unknown as GatewayConfig);
    admin = new WorkerAdminService(workers);
    catchUp = new AdapterCatchUp(workers, store, admin);
    catchUp.retry = { baseMs: 20, maxMs: 50 };
    tasks = new TasksService({ tasks: { dataDir: root, adapterRoots: [root] } } as unknown as GatewayConfig, store, admin, workers, {} as OnboardQueues, catchUp);
    workers.onModuleInit();
    catchUp.onModuleInit();
    await eventually(() => workers.acceptingConnections().length === 2 && !catchUp.pending(addr(a)) && !catchUp.pending(addr(b)), 'both up', 5000);
  });

  afterEach(async () => {
    catchUp.onModuleDestroy();
    workers.onModuleDestroy();
    a.server.forceShutdown();
    b.server.forceShutdown();
    // the next case's names start from no job
    for (const name of ['t', 'u']) {
      await store.locked(name, async (tx) => {
        const latest = await tx.latest(name);
        if (latest !== null && latest.status !== 'deleted') await tx.transition(latest.id, 'deleted', 'spec cleanup');
      });
    }
    rmSync(root, { recursive: true, force: true });
  });

  it('DELETE with requests in flight on B: deleted, unloaded from A at once, held on B and unloaded there once they finish', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: path });
    b.busy.add('t');
    const view = await tasks.delete('t'); // before: 409 (ABORTED), the job still serving, A without t
    expect(view.status).toBe('deleted');
    expect((await store.latest('t'))?.status).toBe('deleted');
    expect([a.adapters.has('t'), a.unloads]).toEqual([false, ['t']]);
    // B's catch-up holds t there (no new request reaches it) and retries its unload while they drain
    await eventually(() => conn(b)?.pendingFor('t') === true, 't held on B', 5000);
    expect(listed()).not.toContain('t');
    await eventually(() => b.refusedUnloads.length >= 3, "B's catch-up retried its unload", 5000);
    expect(b.adapters.has('t')).toBe(true);

    b.busy.clear(); // the requests finish
    await eventually(() => !b.adapters.has('t') && !catchUp.pending(addr(b)), 'B unloaded t', 5000);
    expect(b.unloads).toEqual(['t']);
    expect(a.loads).toEqual([`t ${path}`]); // nothing loaded t back on A
  });

  it('POST /v1/unload_lora_adapter with requests in flight on B: the same (answers success, B unloads it once they finish)', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: path });
    b.busy.add('t');
    expect(await tasks.unloadLora({ lora_name: 't' })).toBe("Success: LoRA adapter 't' removed successfully.");
    expect((await store.latest('t'))?.status).toBe('deleted');
    expect(a.adapters.has('t')).toBe(false);
    await eventually(() => conn(b)?.pendingFor('t') === true, 't held on B', 5000);
    b.busy.clear();
    await eventually(() => !b.adapters.has('t') && !catchUp.pending(addr(b)), 'B unloaded t', 5000);
  });

  it('a load that fails on B after loading A fresh unloads A again: its retry is no 409 task_exists', async () => {
    b.failing.add('u');
    const err = await tasks.loadLora({ lora_name: 'u', lora_path: path }).catch((e: unknown) => e);
    expect((err as { status?: number }).status).toBe(status.UNAVAILABLE);
    expect(await store.latest('u')).toBeNull(); // the row rolled back
    expect([a.loads, a.unloads, a.adapters.has('u')]).toEqual([[`u ${path}`], ['u'], false]); // before: A kept it
    b.failing.clear();
    await tasks.loadLora({ lora_name: 'u', lora_path: path }); // before: 409 task_exists (A served the name)
    expect([a.adapters.has('u'), b.adapters.has('u'), (await store.latest('u'))?.status]).toEqual([true, true, 'serving']);
  });

  it('a catch-up refused in use retries within inUseRetryMs (no growing backoff) and ends its hold after inUseHoldMs, with a warning', async () => {
    catchUp.retry = { baseMs: 5000, maxMs: 60_000 }; // a failure's backoff: far longer than the case
    catchUp.inUseRetryMs = 50;
    catchUp.inUseHoldMs = 600;
    await tasks.loadLora({ lora_name: 't', lora_path: path });
    b.busy.add('t');
    await tasks.delete('t');
    await eventually(() => conn(b)?.pendingFor('t') === true, 't held on B', 5000);
    const t0 = Date.now();
    await eventually(() => b.refusedUnloads.length >= 6, 'retried every ~50 ms', 2000); // before: 1 s, 2 s, 4 s...
    expect(Date.now() - t0).toBeLessThan(1500);
    // past inUseHoldMs the hold ends: B serves what it lists (the unload still retried, with the failure's backoff)
    await eventually(() => conn(b)?.pendingFor('t') === false, "t's hold ended on B", 3000);
    expect(listed()).toContain('t');
    expect(catchUp.pending(addr(b))).toBe(true);
  });
});

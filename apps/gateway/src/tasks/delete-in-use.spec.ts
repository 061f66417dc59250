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
import type { InlaidError } from '../common/inlaid-error';
import type { FakeWorker } from '../testing/adapter-fake-worker';
import { CatchUpHarness } from '../testing/catch-up-harness';
import { eventually } from '../testing/eventually';
import type { AdapterCatchUp } from './adapter-catch-up.service';
import type { OnboardQueues } from './onboard-queues.service';
import type { TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';

const D1 = '1'.repeat(64);
const disk = new Map<string, string>();
const db = testDatabase('inlaid_delete_in_use');

describe('TasksService with an adapter in use, or a load failing part-way', () => {
  const h = new CatchUpHarness(disk, db);
  const { addr, conn, listed } = h;
  let a: FakeWorker;
  let b: FakeWorker;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;
  let tasks: TasksService;
  let root: string;
  let path: string;

  /** A fresh fleet of A and B (in that order), both caught up; t's files at `path`. */
  beforeEach(async () => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'inlaid-in-use-')));
    path = join(root, 't');
    mkdirSync(path);
    disk.clear();
    disk.set(path, D1);
    await h.setup();
    ({ a, b, store, catchUp } = h);
    tasks = new TasksService({ tasks: { dataDir: root, adapterRoots: [root] } } as unknown as GatewayConfig, store, h.admin, h.workers, {} as OnboardQueues, catchUp);
  });

  afterEach(async () => {
    h.teardown(a, b);
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

  /** B holds t of its own (its --adapters-dir: no LoadAdapter path), with requests in flight there. */
  const ownOnB = async (): Promise<void> => {
    b.adapters.set('t', { path: '', digest: '' });
    await conn(b)?.refreshInfo();
    expect(conn(b)?.adapterPath('t')).toBeUndefined();
    b.busy.add('t');
  };

  it("DELETE refused in use by B, whose t is its own: ABORTED, rolled back, A's catch-up loads t back; the retry once they finish deletes it", async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: path });
    await ownOnB();
    const err = await tasks.delete('t').catch((e: unknown) => e);
    // before: success, while B's catch-up (LoadAdapter adapters only) left t served there for good
    expect([(err as { status?: number }).status, (err as Error).message]).toEqual([status.ABORTED, expect.stringContaining('retry when they finish') as unknown]);
    expect((await store.latest('t'))?.status).toBe('serving');
    expect(b.adapters.has('t')).toBe(true);
    await eventually(() => a.adapters.has('t') && !catchUp.pending(addr(a)), "A's catch-up loaded t back", 5000);
    expect([a.loads, a.unloads]).toEqual([[`t ${path}`, `t ${path}`], ['t']]);
    expect(conn(b)?.pendingFor('t')).toBe(false); // not held on B: its requests are served

    b.busy.clear();
    expect((await tasks.delete('t')).status).toBe('deleted');
    expect([a.adapters.has('t'), b.adapters.has('t'), b.unloads]).toEqual([false, false, ['t']]);
  });

  it('POST /v1/unload_lora_adapter of a name only B holds of its own, in use there: ABORTED, nothing recorded, B keeps it', async () => {
    await ownOnB();
    const before = await store.latest('t'); // no live job (none, or an earlier case's, deleted)
    expect(before === null || before.status === 'deleted').toBe(true);
    const err = await tasks.unloadLora({ lora_name: 't' }).catch((e: unknown) => e);
    expect([(err as { status?: number }).status, (err as InlaidError).details.param]).toEqual([status.ABORTED, 'lora_name']);
    expect(await store.latest('t')).toEqual(before);
    expect([b.adapters.has('t'), listed()]).toEqual([true, expect.arrayContaining(['t']) as unknown]);
    b.busy.clear();
    expect(await tasks.unloadLora({ lora_name: 't' })).toBe("Success: LoRA adapter 't' removed successfully.");
    expect(b.adapters.has('t')).toBe(false);
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

  it('a catch-up refused in use retries within inUseRetryMs (no growing backoff) and ends its hold after inUseHoldMs', async () => {
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

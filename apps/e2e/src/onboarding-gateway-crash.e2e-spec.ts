/**
 * A gateway killed (SIGKILL) in the middle of onboardings, then started again: no task stays in an
 * in-between state. The gateway is a real child process (support/gateway-process.ts) on real Postgres,
 * Redis and a worker (tiny model, no checkpoint: re-quantization is skipped, a task goes active on the
 * current base). Where the gateway dies is made certain, not timed: the test holds a task's advisory lock
 * (TaskStore.locked) as another gateway's DELETE would, so the validate step, its worker call done, waits
 * for it. At the kill:
 * - `resumed`: its validate step is running (BullMQ job active, its lock held by the dead gateway). The
 *   restarted gateway takes the stalled job over and the task goes active, served, with one upload directory.
 * - `stalled`: the same, but its step job has already stalled as often as BullMQ allows (its stall counter
 *   is raised in Redis, as after repeated crashes). BullMQ fails it without running it; the task is marked
 *   failed with the reason, and can be deleted (its upload directory goes) and created again.
 * - `orphan`: its row was written but its flow never enqueued (the gateway died between the two; the row is
 *   written here as create() writes it). The restarted gateway enqueues the flow and the task goes active.
 * Then `midload`: killed in its load step while the worker (paused with SIGSTOP) has the load request; the
 * restarted gateway's load step finds the adapter loaded or loads it, and the task goes active, served.
 */
import { dropDatabase } from '@inlaid/db';
import { ONBOARD_QUEUE, stepJobId } from '@inlaid/jobs';
import IORedis from 'ioredis';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { waitFor } from './support/gateway-harness';
import { servedAdapters } from './support/grpc-clients';
import { buildGateway, GatewayProcess, startGatewayProcess } from './support/gateway-process';
import { CALIBRATION } from './support/onboard-fixture';
import { untilTaskStatus } from './support/onboard-stack';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';
import { jsonCall } from './support/task-http';

jest.setTimeout(120_000);

const PREFIX = `e2e${randomBytes(4).toString('hex')}`;
const DB = `inlaid_e2e_${randomBytes(4).toString('hex')}`;
const DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${DB}`;
const REDIS_URL = 'redis://127.0.0.1:6379';
/** TaskStore's advisory lock space (task-store.service.ts) and the step queue workers' maxStalledCount (onboard-queues.service.ts). */
const TASK_LOCK_SPACE = 0x1a1d;
const MAX_STALLED = 5;

let fx: TinyFixture;
let worker: WorkerProcess;
let gw: GatewayProcess | undefined;
let env: Record<string, string>;
let dataDir: string;
let db: Client;
let redis: IORedis;

beforeAll(async () => {
  await buildGateway();
  fx = await makeTinyFixture();
  const noAdapters = join(fx.root, 'no-adapters'); // the worker starts serving the base only
  mkdirSync(noAdapters);
  dataDir = join(fx.root, 'data');
  worker = await startWorker({ ...fx, adaptersDir: noAdapters }, await freePort());
  env = { DATABASE_URL, REDIS_URL, WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: fx.adaptersDir, INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: PREFIX };
  gw = await startGatewayProcess(env); // creates the database and runs the migrations
  db = new Client({ connectionString: DATABASE_URL });
  await db.connect();
  redis = new IORedis(REDIS_URL);
});

afterAll(async () => {
  await gw?.kill();
  await worker?.kill();
  await db?.end();
  if (redis !== undefined) {
    const keys = await redis.keys(`${PREFIX}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
  await dropDatabase(DATABASE_URL);
  if (fx !== undefined) rmSync(fx.root, { recursive: true, force: true });
});

const api = (method: string, path: string, body?: unknown) => jsonCall((gw as GatewayProcess).httpUrl, method, path, body);
const create = (name: string, adapter: string) => api('POST', '/v1/tasks', { name, adapter: { path: adapter }, calibration: CALIBRATION });
const untilStatus = (name: string, want: string) => untilTaskStatus((gw as GatewayProcess).httpUrl, name, want, 30_000);

/** Holds the task's lock from a connection of its own (as a DELETE on another gateway would); returns the release. */
async function holdTaskLock(task: string): Promise<() => Promise<void>> {
  const c = new Client({ connectionString: DATABASE_URL });
  await c.connect();
  await c.query('SELECT pg_advisory_lock($1, hashtext($2))', [TASK_LOCK_SPACE, task]);
  return () => c.end();
}

async function row(id: string): Promise<{ status: string; stages: Record<string, { status: string }>; error: string | null }> {
  const r = await db.query<{ status: string; stages: Record<string, { status: string }>; error: string | null }>(
    `SELECT status, progress->'stages' AS stages, error FROM task_jobs WHERE id = $1`, [id]);
  return r.rows[0] as { status: string; stages: Record<string, { status: string }>; error: string | null };
}

/** Whether some connection holds the task's advisory lock (a gateway's locked section). */
async function taskLockHeld(task: string): Promise<boolean> {
  const r = await db.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = hashtext($2)::oid AND objsubid = 2 AND granted`, [TASK_LOCK_SPACE, task]);
  return r.rows.length > 0;
}

/** The adapters the worker process itself serves (asked directly, not through the gateway). */
const workerAdapters = () => servedAdapters(worker.addr);

/** The task's upload directories (INLAID_DATA_DIR/tasks/<name>-<job id>). */
const uploadDirs = (task: string) => readdirSync(join(dataDir, 'tasks')).filter((d) => d.startsWith(`${task}-`)).sort();
/** The BullMQ step job's hash key (its stall counter is field `stc`). */
const stepKey = (jobId: string) => `${PREFIX}:${ONBOARD_QUEUE}:${stepJobId(jobId, 'validate')}`;

describe('a gateway killed with SIGKILL during onboardings, then restarted', () => {
  it('resumes a stalled step, fails one that stalled too often (deletable, the name reusable), and enqueues a flow it never enqueued', async () => {
    const unlock = { resumed: await holdTaskLock('resumed'), stalled: await holdTaskLock('stalled') };
    const posted = { resumed: await create('resumed', 'sql'), stalled: await create('stalled', 'poet') };
    expect([posted.resumed.status, posted.stalled.status]).toEqual([202, 202]);
    const id = { resumed: posted.resumed.json.job_id as string, stalled: posted.stalled.json.job_id as string };
    for (const j of [id.resumed, id.stalled]) await waitFor(async () => ((await row(j)).stages['validate']?.status === 'running' ? true : undefined), 10_000, `validate of ${j} running`);

    await (gw as GatewayProcess).kill('SIGKILL');
    gw = undefined;
    for (const j of [id.resumed, id.stalled]) {
      expect(await row(j)).toMatchObject({ status: 'queued', stages: { validate: { status: 'running' } } });
      expect(await redis.lrange(`${PREFIX}:${ONBOARD_QUEUE}:active`, 0, -1)).toContain(stepJobId(j, 'validate')); // its lock held by the dead gateway
    }
    await redis.hset(stepKey(id.stalled), 'stc', String(MAX_STALLED)); // as if it had stalled that often already
    const orphan = randomUUID(); // written as create() writes it; its flow never got to Redis
    const orphanDir = join(dataDir, 'tasks', `orphan-${orphan}`);
    mkdirSync(orphanDir, { recursive: true });
    writeFileSync(join(orphanDir, 'calibration.jsonl'), CALIBRATION);
    await db.query(`INSERT INTO task_jobs (id, task, kind, status, adapter_path, calibration_path, wait_for_quantization, history)
      VALUES ($1, 'orphan', 'onboard', 'queued', $2, $3, false, $4)`,
    [orphan, join(fx.adaptersDir, 'sql'), join(orphanDir, 'calibration.jsonl'), JSON.stringify([{ at: new Date().toISOString(), status: 'queued', message: 'accepted' }])]);
    await unlock.resumed();
    await unlock.stalled();

    gw = await startGatewayProcess(env);
    const resumed = await untilStatus('resumed', 'active');
    expect(resumed.job_id).toBe(id.resumed);
    expect(resumed.history.map((j: { status: string }) => j.status)).toEqual(['active']);
    expect((await api('POST', '/v1/completions', { model: 'resumed', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
    expect(uploadDirs('resumed')).toEqual([`resumed-${id.resumed}`]);

    const failed = await untilStatus('stalled', 'failed');
    expect({ job: failed.job_id, error: failed.error }).toEqual({ job: id.stalled, error: 'validate: job stalled more than allowable limit' });
    expect((await api('POST', '/v1/completions', { model: 'stalled', prompt: 'x', max_tokens: 1 })).status).toBe(404);
    expect((await api('DELETE', '/v1/tasks/stalled')).json.status).toBe('deleted');
    expect(uploadDirs('stalled')).toEqual([]);
    const again = await create('stalled', 'poet');
    expect(again.status).toBe(202);
    expect((await untilStatus('stalled', 'active')).job_id).toBe(again.json.job_id);

    expect((await untilStatus('orphan', 'active')).job_id).toBe(orphan);
    expect((await api('POST', '/v1/completions', { model: 'orphan', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
  });

  it('a task whose load was in flight at the worker when the gateway died goes active after the restart', async () => {
    const unlock = await holdTaskLock('midload');
    const post = await create('midload', 'sql');
    expect(post.status).toBe(202);
    const jobId = post.json.job_id as string;
    await waitFor(async () => ((await row(jobId)).stages['validate']?.status === 'running' ? true : undefined), 10_000, 'validate running');
    // its worker call done, the step waits for the lock (TaskStore.locked polls a try-lock, so no waiting lock
    // shows in pg_locks to wait on; the validate call takes well under a second, 3 s leaves room on a busy CI)
    await new Promise((r) => setTimeout(r, 3000));
    process.kill(worker.pid, 'SIGSTOP'); // the load request will wait in the worker's socket
    try {
      await unlock();
      await waitFor(async () => ((await row(jobId)).stages['load']?.status === 'running' && (await taskLockHeld('midload')) ? true : undefined), 10_000, 'load step in its locked section');
      await (gw as GatewayProcess).kill('SIGKILL');
      gw = undefined;
    } finally {
      process.kill(worker.pid, 'SIGCONT');
    }
    expect(await row(jobId)).toMatchObject({ status: 'loading', stages: { validate: { status: 'done' }, load: { status: 'running' } } });
    gw = await startGatewayProcess(env);
    const active = await untilStatus('midload', 'active');
    expect({ job: active.job_id, load: active.progress.stages.load.status }).toEqual({ job: jobId, load: 'done' });
    expect((await workerAdapters()).filter((a) => a === 'midload')).toEqual(['midload']);
    expect((await api('POST', '/v1/completions', { model: 'midload', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
    expect(uploadDirs('midload')).toEqual([`midload-${jobId}`]);
  });
});

/**
 * Concurrent creations of the same new task name (real gateway, worker, Postgres and Redis; no checkpoint on
 * the worker, so a task goes active on the current base). Exactly one is accepted; every other one gets the
 * duplicate-name error (HTTP 409 as an OpenAI error object, gRPC ALREADY_EXISTS) and leaves nothing behind:
 * no task_jobs row, no upload directory under INLAID_DATA_DIR/tasks, no BullMQ job. The accepted task goes
 * active and is served. The same for vLLM's POST /v1/load_lora_adapter, which serves at once.
 */
import { ServiceError } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { ONBOARD_QUEUE, REQUANTIZE_QUEUE, StepPayload } from '@inlaid/jobs';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GATEWAY_CONFIG } from '../../gateway/src/config/config.module';
import { BaseOnlyStack, startBaseOnlyStack, stopBaseOnlyStack } from './support/base-only-stack';
import { Harness } from './support/gateway-harness';
import { CALIBRATION } from './support/onboard-fixture';
import { untilTaskStatus } from './support/onboard-stack';
import { TinyFixture } from './support/python-worker';
import { jsonCall, listTree, multipartCall } from './support/task-http';
import { codeName, TasksApi } from './support/tasks-grpc';

jest.setTimeout(120_000);

const N = 5;
const PREFIX = `e2e${randomBytes(4).toString('hex')}`;

let stack: BaseOnlyStack | undefined;
let fx: TinyFixture;
let h: Harness;
let grpc: TasksApi;
let dataDir: string;

beforeAll(async () => {
  stack = await startBaseOnlyStack(PREFIX);
  ({ fx, h, dataDir } = stack);
  grpc = new TasksApi(h.gateway.grpcAddr);
});

afterAll(async () => {
  grpc?.close();
  await stopBaseOnlyStack(stack);
});

const api = (method: string, path: string, body?: unknown) => jsonCall(h.gateway.httpUrl, method, path, body);

/** The task_jobs rows of `task`. */
async function rows(task: string): Promise<Array<{ id: string; kind: string; status: string }>> {
  return (await h.db.query(`SELECT id, kind, status FROM task_jobs WHERE task = $1`, [task])) as Array<{ id: string; kind: string; status: string }>;
}

/** The distinct task job ids of every BullMQ step job (any state) of `task`. */
async function queuedTaskJobs(task: string): Promise<string[]> {
  const ids = new Set<string>();
  const connection = new IORedis(h.gateway.app.get<GatewayConfig>(GATEWAY_CONFIG).redisUrl, { maxRetriesPerRequest: null });
  try {
    for (const name of [ONBOARD_QUEUE, REQUANTIZE_QUEUE]) {
      const q = new Queue<StepPayload>(name, { connection, prefix: PREFIX });
      for (const j of await q.getJobs(['active', 'waiting', 'waiting-children', 'delayed', 'prioritized', 'completed', 'failed'])) {
        if (j?.data.task === task) ids.add(j.data.taskJobId);
      }
      await q.close();
    }
  } finally {
    connection.disconnect();
  }
  return [...ids].sort();
}

/** The upload directories under INLAID_DATA_DIR/tasks that belong to `task`. */
function uploadDirs(task: string): string[] {
  return listTree(join(dataDir, 'tasks')).filter((p) => p.endsWith('/') && !p.slice(0, -1).includes('/') && p.startsWith(`${task}-`));
}

describe('concurrent creations of one new task name', () => {
  it(`HTTP: of ${N} concurrent multipart POSTs one gets 202, the others 409 task_exists, and they leave nothing behind`, async () => {
    const adapter = (f: string) => readFileSync(join(fx.adaptersDir, 'sql', f));
    const post = () => multipartCall(h.gateway.httpUrl, '/v1/tasks', {
      name: 'twin', adapter_config: adapter('adapter_config.json'), adapter_model: adapter('adapter_model.safetensors'), calibration_file: Buffer.from(CALIBRATION),
    });
    const answers = await Promise.all(Array.from({ length: N }, post));
    expect(answers.map((a) => a.status).sort()).toEqual([202, ...Array<number>(N - 1).fill(409)]);
    const accepted = answers.find((a) => a.status === 202)?.json.job_id as string;
    for (const a of answers.filter((x) => x.status === 409)) {
      expect(a.json).toEqual({ error: { message: 'A task named `twin` already exists.', type: 'invalid_request_error', param: 'name', code: 'task_exists' } });
    }
    expect(await rows('twin')).toEqual([{ id: accepted, kind: 'onboard', status: expect.any(String) }]);
    expect(uploadDirs('twin')).toEqual([`twin-${accepted}/`]);
    expect(await queuedTaskJobs('twin')).toEqual([accepted]);
    const active = await untilTaskStatus(h.gateway.httpUrl, 'twin', 'active', 30_000);
    expect(active.job_id).toBe(accepted);
    expect((await api('POST', '/v1/completions', { model: 'twin', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
    expect(readdirSync(join(dataDir, 'tasks')).filter((d) => d.startsWith('twin-'))).toEqual([`twin-${accepted}`]);
  });

  it(`gRPC: of ${N} concurrent CreateTask calls one succeeds, the others fail with ALREADY_EXISTS`, async () => {
    const calls = Array.from({ length: N }, () => grpc.create({ name: 'grpctwin', adapterPath: 'poet', calibrationJsonl: CALIBRATION }).then(
      (r) => ({ code: 'OK', jobId: r.jobId, details: '' }),
      (e: ServiceError) => ({ code: codeName(e.code), jobId: '', details: e.details }),
    ));
    const out = await Promise.all(calls);
    expect(out.map((o) => o.code).sort()).toEqual([...Array<string>(N - 1).fill('ALREADY_EXISTS'), 'OK']);
    expect(out.filter((o) => o.code === 'ALREADY_EXISTS').map((o) => o.details)).toEqual(Array<string>(N - 1).fill('A task named `grpctwin` already exists.'));
    const accepted = out.find((o) => o.code === 'OK')?.jobId as string;
    expect(await rows('grpctwin')).toEqual([{ id: accepted, kind: 'onboard', status: expect.any(String) }]);
    expect(uploadDirs('grpctwin')).toEqual([`grpctwin-${accepted}/`]); // its inline calibration
    expect(await queuedTaskJobs('grpctwin')).toEqual([accepted]);
    expect((await untilTaskStatus(h.gateway.httpUrl, 'grpctwin', 'active', 30_000)).job_id).toBe(accepted);
  });

  it(`vLLM API: of ${N} concurrent load_lora_adapter calls one loads the adapter, the others get 409 task_exists`, async () => {
    const answers = await Promise.all(Array.from({ length: N }, () => api('POST', '/v1/load_lora_adapter', { lora_name: 'vtwin', lora_path: 'sql' })));
    expect(answers.map((a) => a.status).sort()).toEqual([200, ...Array<number>(N - 1).fill(409)]);
    expect(answers.filter((a) => a.status === 409).map((a) => a.json?.error?.code)).toEqual(Array<string>(N - 1).fill('task_exists'));
    expect((await rows('vtwin')).map((r) => ({ kind: r.kind, status: r.status }))).toEqual([{ kind: 'load', status: 'serving' }]);
    expect((await api('POST', '/v1/completions', { model: 'vtwin', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
  });
});

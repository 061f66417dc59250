/**
 * A DELETE that lands while an onboarding step is under way (real gateway, worker, Postgres and Redis; no
 * checkpoint on the worker, so re-quantization is skipped and a task goes active on the current base). The
 * step's call to the worker is held (support/step-hooks.ts) until the DELETE has landed, then goes on for
 * real. Whatever the order, once the DELETE has answered the worker does not serve the task, requests for it
 * get 404, the task stays deleted, and a new task under the same name is served.
 */
import { ServiceError } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { BaseOnlyStack, startBaseOnlyStack, stopBaseOnlyStack } from './support/base-only-stack';
import { Harness } from './support/gateway-harness';
import { servedAdapters } from './support/grpc-clients';
import { CALIBRATION } from './support/onboard-fixture';
import { WorkerProcess } from './support/python-worker';
import { holdAdminCall, StepLog, watchSteps } from './support/step-hooks';
import { HttpResult, jsonCall, multipartCall } from './support/task-http';
import { codeName, TasksApi, viewJson } from './support/tasks-grpc';

jest.setTimeout(120_000);

let stack: BaseOnlyStack | undefined;
let worker: WorkerProcess;
let h: Harness;
let steps: StepLog;
let grpc: TasksApi;

beforeAll(async () => {
  stack = await startBaseOnlyStack(`e2e${randomBytes(4).toString('hex')}`);
  ({ worker, h } = stack);
  steps = watchSteps(h.gateway.app);
  grpc = new TasksApi(h.gateway.grpcAddr);
});

afterAll(async () => {
  grpc?.close();
  await stopBaseOnlyStack(stack);
});

const api = (method: string, path: string, body?: unknown) => jsonCall(h.gateway.httpUrl, method, path, body);
const complete = (model: string) => api('POST', '/v1/completions', { model, prompt: 'The capital of', max_tokens: 2, temperature: 0, ignore_eos: true });
const create = (name: string, adapter: string, waitForQuantization = false) => api('POST', '/v1/tasks', { name, adapter: { path: adapter }, calibration: CALIBRATION, wait_for_quantization: waitForQuantization });

/** The adapters the worker process itself serves (asked directly, not through the gateway). */
const workerAdapters = () => servedAdapters(worker.addr);

/** Whether `p` settled within `ms` (it keeps running either way). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);
}

/** Every step of the job's flow has run (the last one is `activate`), so nothing of it can come later. */
async function flowOver(jobId: string): Promise<string> {
  return steps.outcome(jobId, 'activate');
}

/** After the race: deleted for good, not served anywhere, 404 for requests and for a second DELETE. */
async function expectGone(name: string, jobId: string): Promise<void> {
  expect(await workerAdapters()).not.toContain(name);
  const served = await complete(name);
  expect({ http: served.status, code: served.json?.error?.code }).toEqual({ http: 404, code: 'model_not_found' });
  const models = await api('GET', '/v1/models');
  expect(models.json.data.map((m: { id: string }) => m.id)).not.toContain(name);
  const got = await api('GET', `/v1/tasks/${name}`);
  expect({ status: got.json.status, job: got.json.job_id }).toEqual({ status: 'deleted', job: jobId });
  const again = await api('DELETE', `/v1/tasks/${name}`);
  expect({ http: again.status, code: again.json?.error?.code }).toEqual({ http: 404, code: 'task_not_found' });
}

/** The name is reusable: a new task under it goes active and is served, with the old flow long over. */
async function expectReusable(name: string, adapter: string): Promise<void> {
  const again = await create(name, adapter);
  expect(again.status).toBe(202);
  expect(await flowOver(again.json.job_id)).toBe('active');
  expect((await api('GET', `/v1/tasks/${name}`)).json.status).toBe('active');
  expect(await workerAdapters()).toContain(name);
  expect((await complete(name)).status).toBe(200);
  const del = await api('DELETE', `/v1/tasks/${name}`);
  expect(del.status).toBe(200);
  expect(await workerAdapters()).not.toContain(name);
}

describe('a DELETE racing an onboarding step', () => {
  it('HTTP DELETE during the load step: answers after the load, which it then unloads; the name is reusable', async () => {
    const held = holdAdminCall(h.gateway.app, 'loadEverywhere', 'racy');
    const post = await create('racy', 'sql');
    expect(post.status).toBe(202);
    const jobId = post.json.job_id as string;
    await held.entered; // the load step is calling the worker
    const del = api('DELETE', '/v1/tasks/racy');
    const answeredDuringLoad = await settlesWithin(del, 1500);
    held.release();
    const deleted: HttpResult = await del;
    expect({ http: deleted.status, status: deleted.json?.status }).toEqual({ http: 200, status: 'deleted' });
    await flowOver(jobId); // the later steps either ran before the DELETE got the lock or were skipped
    await expectGone('racy', jobId);
    // how: the DELETE waited for the load under way, then unloaded what it loaded
    expect({ answeredDuringLoad, load: deleted.json.progress.stages.load?.status }).toEqual({ answeredDuringLoad: false, load: 'done' });
    await expectReusable('racy', 'poet');
  });

  it('gRPC DeleteTask during the validate step: the step writes nothing after it and the adapter is never loaded', async () => {
    // calibration by file_id: the DELETE removes no file the step reads, so the step gets as far as it can
    const file = await multipartCall(h.gateway.httpUrl, '/v1/files', { file: Buffer.from(CALIBRATION), purpose: 'calibration' });
    expect(file.status).toBe(200);
    const held = holdAdminCall(h.gateway.app, 'validate', 'early', 1); // the first validation is POST's own
    const post = await api('POST', '/v1/tasks', { name: 'early', adapter: { path: 'sql' }, calibration: { file_id: file.json.id } });
    expect(post.status).toBe(202);
    const jobId = post.json.job_id as string;
    await held.entered;
    try {
      expect(viewJson(await grpc.delete('early')).status).toBe('deleted');
    } finally {
      held.release();
    }
    await flowOver(jobId);
    await expectGone('early', jobId);
    expect(await steps.outcome(jobId, 'validate')).toBe('skipped: task deleted meanwhile');
    expect(await steps.outcome(jobId, 'load')).toBe('skipped: task deleted');
    expect(viewJson(await grpc.get('early')).progress.stages.load).toBeUndefined();
    await expectReusable('early', 'poet');
  });

  it('gRPC DeleteTask during the activate step of a wait_for_quantization task: no adapter left behind', async () => {
    const held = holdAdminCall(h.gateway.app, 'loadEverywhere', 'late');
    const post = await create('late', 'poet', true);
    expect(post.status).toBe(202);
    const jobId = post.json.job_id as string;
    await held.entered; // activate loads the adapter (re-quantization was skipped: no checkpoint)
    const del = grpc.delete('late');
    const answeredDuringLoad = await settlesWithin(del, 1500);
    held.release();
    const view = viewJson(await del);
    expect(view.status).toBe('deleted');
    await flowOver(jobId);
    await expectGone('late', jobId);
    expect({ answeredDuringLoad, activate: view.progress.stages.activate?.status }).toEqual({ answeredDuringLoad: false, activate: 'done' });
    expect(await flowOver(jobId)).toBe('active'); // activate finished (under the lock) before the DELETE
    const err = await grpc.delete('late').then(() => null, (e: ServiceError) => e);
    expect(codeName(err?.code)).toBe('NOT_FOUND');
    await expectReusable('late', 'sql');
  });
});

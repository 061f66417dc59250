/**
 * Onboarding a task while serving: real Python worker (tiny model, MLGPTQ checkpoint with stored Hessians),
 * real gateway, Postgres and Redis (BullMQ). Covers POST/GET/DELETE /v1/tasks under load, bad adapters,
 * vLLM load/unload, the gRPC Tasks API and a gateway restart in the middle of a job.
 */
import { credentials, Metadata } from '@grpc/grpc-js';
import { tasks } from '@inlaid/proto';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { CALIBRATION, makeOnboardFixture, OnboardFixture } from './support/onboard-fixture';
import { freePort } from './support/ports';
import { startWorker, WorkerProcess } from './support/python-worker';
import { HttpResult, jsonCall } from './support/task-http';

jest.setTimeout(180_000);

let fx: OnboardFixture;
let worker: WorkerProcess;
let h: Harness;
let env: Record<string, string>;

beforeAll(async () => {
  fx = await makeOnboardFixture();
  const port = await freePort();
  worker = await startWorker(fx, port, 120_000, ['--checkpoint', fx.checkpoint]);
  env = { WORKER_ADDRS: worker.addr, INLAID_ADAPTER_ROOT: fx.adapterRoot, INLAID_DATA_DIR: fx.dataDir, INLAID_QUEUE_PREFIX: `e2e${randomBytes(4).toString('hex')}` };
  h = await startHarness(env);
  await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
});

afterAll(async () => {
  await worker?.kill();
  await h?.close();
  if (fx !== undefined) rmSync(fx.root, { recursive: true, force: true });
});

function api(method: string, path: string, body?: unknown): Promise<HttpResult> {
  return jsonCall(h.gateway.httpUrl, method, path, body);
}

async function complete(model: string, maxTokens = 8): Promise<{ status: number; json: any }> {
  return api('POST', '/v1/completions', { model, prompt: 'The capital of', max_tokens: maxTokens, temperature: 0, ignore_eos: true });
}

function untilStatus(name: string, want: string, timeoutMs = 60_000): Promise<any> {
  return waitFor(async () => {
    const r = await api('GET', `/v1/tasks/${name}`);
    if (r.json?.status === 'failed' && want !== 'failed') throw new Error(`task ${name} failed: ${r.json.error}`);
    return r.json?.status === want ? r.json : undefined;
  }, timeoutMs, `task ${name} ${want}`);
}

describe('onboarding a task through the API while serving', () => {
  it('onboards under load: every request completes, the task goes active on a new checkpoint and is served', async () => {
    let stop = false;
    const results = { ok: 0, failed: [] as string[] };
    const client = async () => {
      while (!stop) {
        const r = await complete('sql', 6);
        if (r.status === 200 && r.json.choices[0].finish_reason === 'length') results.ok++;
        else results.failed.push(`${r.status} ${JSON.stringify(r.json)}`);
      }
    };
    const load = [client(), client(), client()];
    await new Promise((r) => setTimeout(r, 300));
    const post = await api('POST', '/v1/tasks', { name: 'newtask', adapter: { path: 'newtask' }, calibration: CALIBRATION, slo: { ttft_ms: 500, tpot_ms: 50 } });
    expect(post.status).toBe(202);
    expect(post.json.job_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(post.json.task.status).toBe('queued');
    const active = await untilStatus('newtask', 'active');
    const okDuring = results.ok;
    stop = true;
    await Promise.all(load);
    expect(results.failed).toEqual([]);
    expect(okDuring).toBeGreaterThan(0);
    expect(active.checkpoint_version).toBe(1);
    expect(active.progress.layers_done).toBe(2);
    expect(active.progress.num_layers).toBe(2);
    for (const s of ['validate', 'load', 'requantize', 'activate']) expect(active.progress.stages[s].status).toBe('done');
    expect(active.history[0].events.map((e: any) => e.status)).toEqual(['queued', 'loading', 'quantizing', 'active']);
    expect(active.slo).toEqual({ ttft_ms: 500, tpot_ms: 50 });
    const served = await complete('newtask');
    expect(served.status).toBe(200);
    expect(served.json.usage.completion_tokens).toBe(8);
    const list = await api('GET', '/v1/tasks');
    expect(list.json.data.map((t: any) => t.name)).toContain('newtask');
  });

  it('refuses a duplicate name with 409 and unknown tasks with 404', async () => {
    const dup = await api('POST', '/v1/tasks', { name: 'newtask', adapter: { path: 'newtask' }, calibration: CALIBRATION });
    expect(dup.status).toBe(409);
    expect(dup.json.error.param).toBe('name');
    const served = await api('POST', '/v1/tasks', { name: 'sql', adapter: { path: 'newtask' }, calibration: CALIBRATION });
    expect(served.status).toBe(409);
    expect((await api('GET', '/v1/tasks/nope')).status).toBe(404);
  });

  it.each([
    ['pickled', 'pickled', /pickle/],
    ['wrongshape', 'wrongshape', /shape/],
    ['escape', '../model', /outside the allowed adapter roots/],
  ])('refuses a bad adapter (%s) with 400 and records the task as failed', async (name, path, reason) => {
    const r = await api('POST', '/v1/tasks', { name, adapter: { path }, calibration: CALIBRATION });
    expect(r.status).toBe(400);
    expect(r.json.error.message).toMatch(reason);
    const t = await api('GET', `/v1/tasks/${name}`);
    expect(t.json.status).toBe('failed');
    expect(t.json.error).toMatch(reason);
    expect((await complete(name)).status).toBe(404);
  });

  it('refuses malformed calibration data naming the field', async () => {
    const r = await api('POST', '/v1/tasks', { name: 'badcal', adapter: { path: 'second' }, calibration: '{"text": "ok"}\nnot json' });
    expect(r.status).toBe(400);
    expect(r.json.error.param).toBe('calibration');
    expect(r.json.error.message).toMatch(/line 2/);
  });

  it('DELETE stops serving the task', async () => {
    const d = await api('DELETE', '/v1/tasks/newtask');
    expect(d.status).toBe(200);
    expect(d.json.status).toBe('deleted');
    expect((await complete('newtask')).status).toBe(404);
    expect((await api('DELETE', '/v1/tasks/newtask')).status).toBe(404);
  });

  it('serves the vLLM load/unload endpoints and the gRPC Tasks API', async () => {
    const load = await api('POST', '/v1/load_lora_adapter', { lora_name: 'vl', lora_path: 'third' });
    expect(load.status).toBe(200);
    expect(load.text).toMatch(/added successfully/);
    expect((await complete('vl')).status).toBe(200);
    expect((await api('POST', '/v1/load_lora_adapter', { lora_name: 'vl', lora_path: 'third' })).status).toBe(409);
    expect((await api('POST', '/v1/load_lora_adapter', { lora_name: 'vx', lora_path: '/etc' })).status).toBe(400);
    const grpc = new tasks.TasksClient(h.gateway.grpcAddr, credentials.createInsecure());
    const view = await new Promise<tasks.TaskView>((res, rej) => grpc.getTask({ name: 'vl' }, new Metadata(), (e, v) => (e ? rej(e) : res(v))));
    expect(view.status).toBe('serving');
    expect(JSON.parse(view.json).kind).toBe('load');
    grpc.close();
    const unload = await api('POST', '/v1/unload_lora_adapter', { lora_name: 'vl' });
    expect(unload.status).toBe(200);
    expect((await complete('vl')).status).toBe(404);
    expect((await api('POST', '/v1/unload_lora_adapter', { lora_name: 'vl' })).status).toBe(404);
  });

  it('resumes and finishes a job after a gateway restart in the middle of it', async () => {
    const post = await api('POST', '/v1/tasks', { name: 'second', adapter: { path: 'second' }, calibration: CALIBRATION });
    expect(post.status).toBe(202);
    await waitFor(async () => ((await api('GET', '/v1/tasks/second')).json?.status === 'quantizing' ? true : undefined), 30_000, 'second quantizing');
    await h.gateway.close(); // not harness.close(): keep the database
    h = await startHarness({ ...env, DATABASE_URL: h.databaseUrl });
    const active = await untilStatus('second', 'active');
    expect(active.checkpoint_version).toBeGreaterThanOrEqual(2);
    expect(active.progress.stages.requantize.status).toBe('done');
    expect((await complete('second')).status).toBe(200);
    expect(join(fx.root, 'ckpt-versions')).toBeTruthy();
  });
});

/**
 * The HTTP side of task onboarding (issue 6) against a real gateway + worker (tiny model, MLGPTQ checkpoint),
 * Postgres and Redis: multipart adapter uploads, calibration uploads (POST /v1/files + file_id), size limits
 * (INLAID_MAX_UPLOAD_BYTES set small, the calibration record cap), refusals that leave nothing behind on disk
 * or in task_jobs (except the kept `failed` record of a refused adapter; among them uploaded adapters with NaN,
 * infinite or finite but huge weights), wait_for_quantization, and DELETE (of an active task, and of one during its own
 * re-quantization) followed by a re-quantization that drops the deleted tasks from the next checkpoint
 * version and only then removes their upload directories, while requests to another task keep succeeding.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fillTensors } from './support/adapter-files';
import { Harness, waitFor } from './support/gateway-harness';
import { CALIBRATION, OnboardFixture } from './support/onboard-fixture';
import { OnboardStack, startOnboardStack, stopOnboardStack, untilTaskStatus } from './support/onboard-stack';
import { HttpResult, jsonCall, listTree, multipartCall } from './support/task-http';

jest.setTimeout(120_000);

const MAX_UPLOAD = 2 * 1024 * 1024;

let stack: OnboardStack | undefined;
let fx: OnboardFixture;
let h: Harness;

beforeAll(async () => {
  stack = await startOnboardStack({ INLAID_MAX_UPLOAD_BYTES: String(MAX_UPLOAD) });
  ({ fx, h } = stack);
});

afterAll(() => stopOnboardStack(stack));

const api = (method: string, path: string, body?: unknown) => jsonCall(h.gateway.httpUrl, method, path, body);
const upload = (path: string, parts: Record<string, string | Buffer>) => multipartCall(h.gateway.httpUrl, path, parts);
const complete = (model: string) => api('POST', '/v1/completions', { model, prompt: 'The capital of', max_tokens: 4, temperature: 0, ignore_eos: true });

const adapterFile = (dir: string, file: string) => readFileSync(join(fx.adapterRoot, dir, file));
const config = (change: Record<string, unknown> = {}) => Buffer.from(JSON.stringify({ ...JSON.parse(adapterFile('newtask', 'adapter_config.json').toString()), ...change }));
const weights = () => adapterFile('newtask', 'adapter_model.safetensors');
const NAN_TENSOR = 'base_model.model.model.layers.1.mlp.down_proj.lora_B.weight';
const INF_TENSOR = 'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight';
const HUGE_TENSOR = 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight';
/** The adapter's weights with one tensor set to `value`. */
function poisoned(tensor: string, value: number): Buffer {
  const { bytes, names } = fillTensors(weights(), new RegExp(`^${tensor.replace(/\./g, '\\.')}$`), value);
  if (names.length !== 1) throw new Error(`no F32 tensor ${tensor}`);
  return bytes;
}
const nonFinite = (tensor: string, what: string) => new RegExp(`tensor '${tensor.replace(/\./g, '\\.')}' holds non-finite values \\(${what}`);
/** The worker's refusal of a finite tensor that float16 cannot hold (lora/magnitude.py), naming it. */
const tooLarge = (tensor: string) => new RegExp(`tensor '${tensor.replace(/\./g, '\\.')}' holds values up to 1e\\+30 in magnitude; LoRA weights above 65504`);
/** Where an accepted task's uploads live. */
const uploadDir = (name: string, jobId: string) => join(fx.dataDir, 'tasks', `${name}-${jobId}`);

/** Sends completions to `model` one after another until stopped; resolves with every status that was not 200. */
function keepCompleting(model: string): { stop(): Promise<{ sent: number; failed: string[] }> } {
  let running = true;
  const failed: string[] = [];
  let sent = 0;
  const loop = (async () => {
    while (running) {
      const r = await complete(model);
      sent++;
      if (r.status !== 200) failed.push(`${r.status} ${r.text}`);
    }
  })();
  return { stop: async () => ((running = false), await loop, { sent, failed }) };
}

const untilStatus = (name: string, want: string, timeoutMs = 40_000) => untilTaskStatus(h.gateway.httpUrl, name, want, timeoutMs);

/** task_jobs rows by id as "task kind status" (other tasks' rows change status meanwhile; ids do not). */
async function rows(): Promise<Map<string, string>> {
  const r: Array<{ id: string; task: string; kind: string; status: string }> = await h.db.query('SELECT id, task, kind, status FROM task_jobs');
  return new Map(r.map((x) => [x.id, `${x.task} ${x.kind} ${x.status}`]));
}

/** The task set of the checkpoint version the worker's store publishes (its aggregated Hessians' index). */
function publishedTasks(): { version: number; tasks: string[] } {
  const current = JSON.parse(readFileSync(join(`${fx.checkpoint}-versions`, 'current.json'), 'utf8')) as { version: number; path: string };
  const index = JSON.parse(readFileSync(join(current.path, 'hessians', 'index.json'), 'utf8')) as { tasks: Record<string, unknown> };
  return { version: current.version, tasks: Object.keys(index.tasks).sort() };
}

function expectOpenAIError(r: HttpResult, status: number, message: RegExp): void {
  expect(r.status).toBe(status);
  expect(Object.keys(r.json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(r.json.error.message).toMatch(message);
  expect(r.json.error.type).toBe('invalid_request_error');
}

describe('onboarding through the HTTP API', () => {
  it('onboards an uploaded adapter (multipart) and one whose calibration is an uploaded file id; both serve', async () => {
    const up = await upload('/v1/tasks', { name: 'up1', adapter_config: config(), adapter_model: weights(), calibration_file: Buffer.from(CALIBRATION) });
    expect(up.status).toBe(202);
    expect(up.json.task.adapter_path).toBe(join(fx.dataDir, 'tasks', `up1-${up.json.job_id}`, 'adapter'));
    const file = await upload('/v1/files', { file: Buffer.from(CALIBRATION), purpose: 'calibration' });
    expect(file.status).toBe(200); // as OpenAI's POST /v1/files
    expect(file.json).toMatchObject({ id: expect.stringMatching(/^file-[0-9a-f]+$/), object: 'file', bytes: Buffer.byteLength(CALIBRATION), purpose: 'calibration' });
    const byId = await api('POST', '/v1/tasks', { name: 'byfile', adapter: { path: 'second' }, calibration: { file_id: file.json.id } });
    expect(byId.status).toBe(202);
    for (const name of ['up1', 'byfile']) {
      const active = await untilStatus(name, 'active');
      expect(active.checkpoint_version).toBeGreaterThanOrEqual(1);
      expect((await complete(name)).status).toBe(200);
    }
    expect(publishedTasks().tasks).toEqual(['byfile', 'poet', 'sql', 'up1']);
  });

  const good = () => ({ adapter_config: config(), adapter_model: weights(), calibration_file: Buffer.from(CALIBRATION) });
  const records = (n: number) => Array.from({ length: n }, () => '{"text":"a"}').join('\n');
  // [case, request, status, message, a failed record is kept]
  const refusals: Array<[string, () => Promise<HttpResult>, number, RegExp, boolean]> = [
    ['uploaded pickle', () => upload('/v1/tasks', { name: 'r-pickle', ...good(), adapter_model: adapterFile('pickled', 'adapter_model.bin') }), 400, /pickle/, true],
    ['pickle by path', () => api('POST', '/v1/tasks', { name: 'r-pickle2', adapter: { path: 'pickled' }, calibration: CALIBRATION }), 400, /pickle/, true],
    ['wrong rank', () => upload('/v1/tasks', { name: 'r-rank', ...good(), adapter_config: config({ r: 8 }) }), 400, /shape/, true],
    ['uploaded adapter with a NaN weight', () => upload('/v1/tasks', { name: 'r-nan', ...good(), adapter_model: poisoned(NAN_TENSOR, Number.NaN) }), 400, nonFinite(NAN_TENSOR, '\\d+ NaN, 0 infinite'), true],
    ['uploaded adapter with an infinite weight', () => upload('/v1/tasks', { name: 'r-inf', ...good(), adapter_model: poisoned(INF_TENSOR, Infinity) }), 400, nonFinite(INF_TENSOR, '0 NaN, \\d+ infinite'), true],
    ['uploaded adapter with finite weights too large for float16', () => upload('/v1/tasks', { name: 'r-huge', ...good(), adapter_model: poisoned(HUGE_TENSOR, 1e30) }), 400, tooLarge(HUGE_TENSOR), true],
    ['wrong base', () => upload('/v1/tasks', { name: 'r-base', ...good(), adapter_config: config({ base_model_name_or_path: 'meta-llama/Llama-2-7b-hf' }) }), 400, /trained on/, true],
    ['wrong shapes by path', () => api('POST', '/v1/tasks', { name: 'r-shape', adapter: { path: 'wrongshape' }, calibration: CALIBRATION }), 400, /shape/, true],
    ['path outside the root', () => api('POST', '/v1/tasks', { name: 'r-escape', adapter: { path: '../model' }, calibration: CALIBRATION }), 400, /outside the allowed adapter roots/, true],
    ['duplicate name', () => upload('/v1/tasks', { name: 'up1', ...good() }), 409, /already exists/, false],
    ['empty calibration file', () => upload('/v1/tasks', { name: 'r-empty', ...good(), calibration_file: Buffer.from('\n\n') }), 400, /empty/, false],
    ['malformed calibration file', () => upload('/v1/tasks', { name: 'r-malformed', ...good(), calibration_file: Buffer.from('{"text":"a"}\nnot json') }), 400, /line 2 is not JSON/, false],
    ['unknown calibration file id', () => api('POST', '/v1/tasks', { name: 'r-noid', adapter: { path: 'third' }, calibration: { file_id: 'file-0123456789abcdef0123' } }), 400, /was not uploaded/, false],
    ['calibration over the record cap', () => upload('/v1/tasks', { name: 'r-records', ...good(), calibration_file: Buffer.from(records(100_001)) }), 413, /more than 100000 records/, false],
    ['upload over INLAID_MAX_UPLOAD_BYTES', () => upload('/v1/tasks', { name: 'r-big', ...good(), adapter_model: Buffer.alloc(MAX_UPLOAD + 1) }), 413, /INLAID_MAX_UPLOAD_BYTES/, false],
    ['JSON body over 1 MiB', () => api('POST', '/v1/tasks', { name: 'r-body', adapter: { path: 'third' }, calibration: records(90_000) }), 413, /too large/, false],
    ['calibration upload over INLAID_MAX_UPLOAD_BYTES', () => upload('/v1/files', { file: Buffer.alloc(MAX_UPLOAD + 1, 0x20) }), 413, /INLAID_MAX_UPLOAD_BYTES/, false],
    ['calibration upload over the record cap', () => upload('/v1/files', { file: Buffer.from(records(100_001)) }), 413, /more than 100000 records/, false],
    ['malformed calibration upload', () => upload('/v1/files', { file: Buffer.from('nope') }), 400, /line 1 is not JSON/, false],
  ];

  it.each(refusals)('refuses %s with an OpenAI-style error and leaves nothing behind', async (_case, request, status, message, recorded) => {
    const before = { files: listTree(fx.dataDir), rows: await rows() };
    const r = await request();
    expectOpenAIError(r, status, message);
    if (status === 413) expect(r.json.error.code).toBe('request_too_large');
    expect(listTree(fx.dataDir)).toEqual(before.files);
    const added = [...(await rows())].filter(([id]) => !before.rows.has(id)).map(([, row]) => row);
    expect(added).toEqual(recorded ? [expect.stringMatching(/^r-\S+ onboard failed$/)] : []);
  });

  it('keeps a refused adapter as a failed record whose name can be reused', async () => {
    const failed = await api('GET', '/v1/tasks/r-rank');
    expect(failed.json).toMatchObject({ status: 'failed', adapter_path: null, error: expect.stringMatching(/^validate: .*shape/) });
    expect((await complete('r-rank')).status).toBe(404);
  });

  it('wait_for_quantization: the task does not serve until its re-quantization is done, then it does', async () => {
    const post = await api('POST', '/v1/tasks', { name: 'r-rank', adapter: { path: 'third' }, calibration: CALIBRATION, wait_for_quantization: true });
    expect(post.status).toBe(202);
    expect(post.json.task.wait_for_quantization).toBe(true);
    // Each request is followed by a look at the task: a 200 is only allowed once its re-quantization is done
    // (the activate step loads the adapter a moment before it marks the task active).
    const seen = new Set<string>();
    for (;;) {
      const served = await complete('r-rank');
      const now = (await api('GET', '/v1/tasks/r-rank')).json;
      if (now.status === 'failed') throw new Error(now.error);
      if (now.status === 'active') break;
      seen.add(now.status);
      const requantized = now.progress.stages.requantize?.status === 'done';
      if (!requantized) expect({ status: now.status, http: served.status, code: served.json.error?.code }).toEqual({ status: now.status, http: 404, code: 'model_not_found' });
    }
    expect(seen.has('quantizing')).toBe(true);
    const active = await untilStatus('r-rank', 'active');
    expect(active.history.at(-1).events.map((e: any) => e.status)).toEqual(['queued', 'quantizing', 'active']);
    expect(active.progress.stages.load).toBeUndefined();
    expect((await complete('r-rank')).status).toBe(200);
    expect(publishedTasks().tasks).toContain('r-rank');
  });

  it('DELETE of an active task and of one in its own re-quantization: the next version drops both, and only then their upload directories go; requests to another task never fail', async () => {
    const before = publishedTasks();
    expect(before.tasks).toContain('up1');
    const up1Dir = uploadDir('up1', (await api('GET', '/v1/tasks/up1')).json.job_id);
    expect(existsSync(join(up1Dir, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    const traffic = keepCompleting('byfile');

    const mid = await upload('/v1/tasks', { name: 'mid', ...good() });
    expect(mid.status).toBe(202);
    const midDir = uploadDir('mid', mid.json.job_id);
    // deleted while its re-quantization runs (a layer of it is done), or just after (then it is active)
    await waitFor(async () => {
      const v = (await api('GET', '/v1/tasks/mid')).json;
      if (v.status === 'failed') throw new Error(v.error);
      return v.progress.layers_done > 0 || v.status === 'active' ? true : undefined;
    }, 40_000, 'mid re-quantizing');
    const delMid = await api('DELETE', '/v1/tasks/mid');
    expect(delMid.status).toBe(200);
    expect(delMid.json.history.map((j: any) => `${j.kind} ${j.status}`)).toEqual(['onboard deleted', 'delete queued']);
    expect(existsSync(join(midDir, 'adapter', 'adapter_model.safetensors'))).toBe(true); // the run may still read it
    // the run it was in ends and publishes a version holding it: its files stay until a version drops it
    await waitFor(async () => ((await api('GET', '/v1/tasks/mid')).json.progress.stages.requantize?.status === 'done' ? true : undefined), 40_000, 'the run of mid done');
    expect(publishedTasks().tasks).toContain('mid');
    expect(existsSync(join(midDir, 'calibration.jsonl'))).toBe(true);

    const del = await api('DELETE', '/v1/tasks/up1');
    expect(del.status).toBe(200);
    expect((await complete('up1')).status).toBe(404);
    expect(del.json.history.map((j: any) => `${j.kind} ${j.status}`)).toEqual(['onboard deleted', 'delete queued']);
    expect(existsSync(join(up1Dir, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    expect((await api('POST', '/v1/tasks', { name: 'after', adapter: { path: 'newtask' }, calibration: CALIBRATION })).status).toBe(202);
    const active = await untilStatus('after', 'active');
    const after = publishedTasks();
    expect(after.version).toBe(active.checkpoint_version);
    expect(after.version).toBeGreaterThan(before.version);
    expect(after.tasks).toEqual([...before.tasks.filter((t) => t !== 'up1'), 'after'].sort());
    for (const name of ['up1', 'mid']) {
      const view = (await api('GET', `/v1/tasks/${name}`)).json;
      const removal = view.history.find((j: any) => j.kind === 'delete');
      expect([name, removal.status, removal.events.at(-1).message]).toEqual([name, 'completed', `dropped from checkpoint v${after.version}`]);
    }
    expect([existsSync(up1Dir), existsSync(midDir)]).toEqual([false, false]);
    expect(existsSync(join(fx.adapterRoot, 'newtask', 'adapter_model.safetensors'))).toBe(true); // a client's adapter is not ours to remove
    const list = (await api('GET', '/v1/tasks')).json.data.map((t: any) => `${t.name} ${t.status}`);
    expect(list).toEqual(expect.arrayContaining(['up1 deleted', 'mid deleted', 'after active', 'byfile active', 'r-rank active']));
    const served = await traffic.stop();
    expect(served.failed).toEqual([]);
    expect(served.sent).toBeGreaterThan(0);
  });
});

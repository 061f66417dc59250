/**
 * A task deleted once it is in a checkpoint version and then created again under the same name, against a
 * real gateway and a worker serving the tiny model's MLGPTQ checkpoint: the deleted task's queued removal
 * must drop the old Hessians, not the new task's. The re-quantization that adds the new task runs the
 * removal first, alone; the version that ends up served holds the new task, quantized with its own adapter.
 * Also for a task deleted during its load step (the DELETE waits for the load, so the task it deletes is
 * waiting for re-quantization and its removal is queued although no version holds it).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Harness } from './support/gateway-harness';
import { CALIBRATION, OnboardFixture } from './support/onboard-fixture';
import { OnboardStack, startOnboardStack, stopOnboardStack, untilTaskStatus } from './support/onboard-stack';
import { holdAdminCall } from './support/step-hooks';
import { jsonCall } from './support/task-http';

jest.setTimeout(180_000);

let stack: OnboardStack | undefined;
let fx: OnboardFixture;
let h: Harness;

beforeAll(async () => {
  stack = await startOnboardStack();
  ({ fx, h } = stack);
});

afterAll(() => stopOnboardStack(stack));

const api = (method: string, path: string, body?: unknown) => jsonCall(h.gateway.httpUrl, method, path, body);
const untilStatus = (name: string, want: string, timeoutMs = 90_000) => untilTaskStatus(h.gateway.httpUrl, name, want, timeoutMs);

/** The served version: its number, its tasks, and a digest of each task's stored Hessians (all layers). */
function published(): { version: number; tasks: string[]; hessians: (task: string) => string } {
  const current = JSON.parse(readFileSync(join(`${fx.checkpoint}-versions`, 'current.json'), 'utf8')) as { version: number; path: string };
  const index = JSON.parse(readFileSync(join(current.path, 'hessians', 'index.json'), 'utf8')) as { tasks: Record<string, unknown> };
  const hessians = (task: string) => {
    const dir = join(current.path, 'hessians', 'tasks', task);
    const digest = createHash('sha256');
    for (const f of readdirSync(dir).sort()) digest.update(readFileSync(join(dir, f)));
    return digest.digest('hex');
  };
  return { version: current.version, tasks: Object.keys(index.tasks).sort(), hessians };
}

describe('a task name reused after a delete', () => {
  it("the deleted task's queued removal drops the old Hessians, and the new task's are in the served version", async () => {
    expect((await api('POST', '/v1/tasks', { name: 'reuse', adapter: { path: 'newtask' }, calibration: CALIBRATION })).status).toBe(202);
    const first = await untilStatus('reuse', 'active');
    expect(published().tasks).toContain('reuse');
    const old = published().hessians('reuse');
    const del = await api('DELETE', '/v1/tasks/reuse');
    expect(del.status).toBe(200);
    const removal = (del.json.history as Array<{ job_id: string; kind: string; status: string }>).find((j) => j.kind === 'delete');
    expect(removal?.status).toBe('queued'); // its Hessians go at the next re-quantization
    const again = await api('POST', '/v1/tasks', { name: 'reuse', adapter: { path: 'second' }, calibration: CALIBRATION });
    expect(again.status).toBe(202);
    const second = await untilStatus('reuse', 'active');
    expect(second.checkpoint_version).toBeGreaterThan(first.checkpoint_version);
    const now = published();
    expect(now.version).toBe(second.checkpoint_version);
    expect(now.tasks).toEqual(['poet', 'reuse', 'sql']);
    expect(now.hessians('reuse')).not.toBe(old); // computed with the new adapter, not the deleted task's
    const history = (await api('GET', '/v1/tasks/reuse')).json.history as Array<{ job_id: string; status: string }>;
    expect(history.find((j) => j.job_id === removal?.job_id)?.status).toBe('completed');
    expect((await api('POST', '/v1/completions', { model: 'reuse', prompt: 'The capital of', max_tokens: 2, temperature: 0 })).status).toBe(200);
  });

  it('a task deleted during its load step (its removal queued, its Hessians in no version) and created again is in the next version', async () => {
    const held = holdAdminCall(h.gateway.app, 'loadEverywhere', 'reload');
    const post = await api('POST', '/v1/tasks', { name: 'reload', adapter: { path: 'third' }, calibration: CALIBRATION });
    expect(post.status).toBe(202);
    await held.entered;
    const del = api('DELETE', '/v1/tasks/reload'); // waits for the load, then finds the task waiting for re-quantization
    held.release();
    const deleted = await del;
    expect(deleted.status).toBe(200);
    const removal = (deleted.json.history as Array<{ job_id: string; kind: string; status: string }>).find((j) => j.kind === 'delete');
    expect(removal?.status).toBe('queued');
    const before = published();
    const again = await api('POST', '/v1/tasks', { name: 'reload', adapter: { path: 'newtask' }, calibration: CALIBRATION });
    expect(again.status).toBe(202);
    const active = await untilStatus('reload', 'active');
    const now = published();
    expect({ version: now.version, tasks: now.tasks }).toEqual({ version: active.checkpoint_version, tasks: [...before.tasks.filter((t) => t !== 'reload'), 'reload'].sort() });
    const history = (await api('GET', '/v1/tasks/reload')).json.history as Array<{ job_id: string; status: string }>;
    expect(history.find((j) => j.job_id === removal?.job_id)?.status).toBe('completed');
  });
});

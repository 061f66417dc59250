/**
 * INLAID_COST_FIT on real traffic: a real Python worker (tiny random Llama, two adapters) behind the real
 * gateway and Postgres. Before any traffic GET /dashboard/api/cost-model is 404; after a burst of greedy
 * requests it returns a calibration file the simulator's parser accepts, whose served steps are consistent
 * with what was served (as many steps as the longest request needs at least, no more than the tokens
 * generated; their wall times add up to no more than the burst took) and whose fit is what the scheduler
 * plans with (`online`).
 */
import { parseCostModel } from '@inlaid/scheduling';
import OpenAI from 'openai';
import { rmSync } from 'node:fs';
import { SchedulingService } from '../../gateway/src/scheduling/scheduling.service';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';

jest.setTimeout(240_000);

let fixture: TinyFixture;
let worker: WorkerProcess;
let h: Harness;

beforeAll(async () => {
  fixture = await makeTinyFixture();
  worker = await startWorker(fixture, await freePort());
  h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_COST_FIT: 'online', INLAID_COST_FIT_MIN_STEPS: '20', INLAID_COST_FIT_WINDOW: '500' });
  const sched = h.gateway.app.get(SchedulingService);
  await waitFor(async () => (sched.dispatcher.workerCount === 1 ? true : undefined), 10_000, 'worker registered with the scheduler');
});

afterAll(async () => {
  await h?.close();
  await worker?.kill();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

interface Step {
  wallS: number;
  prefillTokens: number;
  decodeRows: number;
  adapters: number;
}

it('measures the served steps, fits them and exports the fit as a calibration file', async () => {
  const url = `${h.gateway.httpUrl}/dashboard/api/cost-model?points=1`;
  expect((await fetch(url)).status).toBe(404);
  const client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
  const maxTokens = Array.from({ length: 12 }, (_, i) => 20 + 4 * i);
  const t0 = performance.now();
  const done = await Promise.all(
    maxTokens.map((n, i) => client.completions.create({ model: fixture.adapters[i % 2], prompt: `request ${i}: the quick brown fox`, max_tokens: n, temperature: 0, ignore_eos: true } as never)),
  );
  const elapsedS = (performance.now() - t0) / 1000;
  const generated = done.reduce((a, r) => a + ((r as unknown as OpenAI.Completion).usage?.completion_tokens ?? 0), 0);
  expect(generated).toBe(maxTokens.reduce((a, b) => a + b, 0));

  const res = await fetch(url);
  expect(res.status).toBe(200);
  const file = (await res.json()) as Record<string, unknown> & { points: Step[]; fit_error: { n_steps: number; median_rel: number } };
  const model = parseCostModel(file);
  expect(model.placeholder).toBe(false);
  const steps = file.points;
  expect(steps.length).toBe(file.fit_error.n_steps);
  expect(steps.length).toBeGreaterThanOrEqual(Math.max(...maxTokens) - 2);
  expect(steps.length).toBeLessThanOrEqual(generated);
  expect(steps.reduce((a, s) => a + s.wallS, 0)).toBeLessThanOrEqual(elapsedS);
  expect(steps.every((s) => s.adapters >= 1 && s.adapters <= 2 && s.decodeRows <= 12)).toBe(true);
  expect(steps.some((s) => s.decodeRows >= 6)).toBe(true);
  // the scheduler plans with the served fit (there is no INLAID_COST_MODEL, so any step cost is the fit's)
  const sched = h.gateway.app.get(SchedulingService);
  expect(sched.served?.stepCost(worker.addr)).toBeDefined();
  const planned = await waitFor(async () => sched.plannedStepCost(worker.addr), 5000, 'a WorkerState after the fit');
  expect(Object.keys(planned).sort()).toEqual(['adapterS', 'baseS', 'decodeRowS', 'kvTokenS', 'prefillStepS', 'prefillTokenS']);
});

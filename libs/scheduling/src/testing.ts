/**
 * Test and benchmark helpers: request factories and a fixed-step driver that plays the worker's part
 * (every request in the batch gets one token per step). Pure; used by specs here and by callers.
 */
import { Scheduler } from './scheduler';
import { RequestOutcome, RequestSpec, StepPlan, WorkerState } from './types';

export interface DriveRequest {
  readonly spec: RequestSpec;
  readonly outputTokens: number;
}

export function worker(overrides: Partial<WorkerState> = {}): WorkerState {
  return { id: 'w0', kvBlocksTotal: 1000, blockSize: 16, maxBatchRows: 64, maxPrefillTokens: 8192, ...overrides };
}

export function request(id: string, task: string, promptTokens = 32, arrivalS = 0): RequestSpec {
  return { id, task, promptTokens, arrivalS };
}

export interface DriveResult {
  readonly outcomes: Map<string, RequestOutcome>;
  readonly firstAdmitS: Map<string, number>;
  readonly aborted: Set<string>;
  readonly endS: number;
}

/** Runs one worker in fixed steps until everything finished or `maxSteps`; `onPlan` sees every plan. */
export function driveFixedStep(
  s: Scheduler,
  reqs: readonly DriveRequest[],
  stepS: number,
  maxSteps: number,
  onPlan: (plan: StepPlan, now: number) => void = () => undefined,
  workerId = 'w0',
): DriveResult {
  const pending = [...reqs].sort((a, b) => a.spec.arrivalS - b.spec.arrivalS);
  const outputs = new Map(reqs.map((r) => [r.spec.id, r.outputTokens]));
  const generated = new Map<string, number>();
  const outcomes = new Map<string, RequestOutcome>();
  const firstAdmitS = new Map<string, number>();
  const aborted = new Set<string>();
  let now = 0;
  let next = 0;
  for (let step = 0; step < maxSteps && outcomes.size + aborted.size < reqs.length; step++) {
    while (next < pending.length && pending[next].spec.arrivalS <= now) s.enqueue(pending[next++].spec);
    const plan = s.schedule(now, workerId);
    onPlan(plan, now);
    for (const d of plan.decisions) {
      if (d.kind === 'admit' && !firstAdmitS.has(d.requestId)) firstAdmitS.set(d.requestId, now);
      if (d.kind === 'abort') aborted.add(d.requestId);
    }
    now += stepS;
    for (const id of plan.batch) {
      s.onToken(id, now);
      const g = (generated.get(id) ?? 0) + 1;
      generated.set(id, g);
      if (g >= (outputs.get(id) ?? 0)) outcomes.set(id, s.onFinish(id, now));
    }
  }
  return { outcomes, firstAdmitS, aborted, endS: now };
}

/** Small seeded PRNG (mulberry32) for property tests; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

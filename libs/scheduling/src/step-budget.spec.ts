import { PolicyName } from './config';
import { Scheduler } from './scheduler';
import { midLifeKvTokens, PrefillShare, stepBudgetS } from './step-budget';
import { request, worker } from './testing';
import { TrackedRequest } from './tracked';
import { Decision, StepCost } from './types';

const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);
const tasksIn = (batch: readonly string[]): number => new Set(batch.map((id) => id.split('-')[0])).size;
// 10 ms base + 10 ms per distinct adapter; rows and KV free. TPOT 50 ms x safety 0.9 = 45 ms: 3 adapters fit.
const ADAPTER_HEAVY: StepCost = { baseS: 0.01, decodeRowS: 0, adapterS: 0.01, kvTokenS: 0, prefillTokenS: 0 };
const SLO = { ttftS: 2, tpotS: 0.05 };

/** Seven tasks, three requests each, all arriving at t = 0 (ids "<task>-<i>"). */
function sevenTasks(s: Scheduler, arrivalS = 0): void {
  for (let i = 0; i < 21; i++) s.enqueue(request(`t${i % 7}-${i}`, `t${i % 7}`, 32, arrivalS + i * 1e-3));
}

function scheduler(policy: PolicyName, inlaid = {}, cost: StepCost = ADAPTER_HEAVY): Scheduler {
  const s = new Scheduler({ policy, inlaid: { beta: 10, budgetSafety: 0.95, lostReserveQuantile: null, ...inlaid }, defaultSlo: SLO });
  s.onWorkerState(worker({ stepCost: cost }));
  return s;
}

describe('SLO-aware step budget (inlaid)', () => {
  it('bounds the beta group itself, not only the fill, by safety x TPOT', () => {
    const s = scheduler('inlaid');
    sevenTasks(s);
    expect(tasksIn(s.schedule(0.1, 'w0').batch)).toBe(3);
    const off = scheduler('inlaid', { stepBudget: false });
    sevenTasks(off);
    expect(tasksIn(off.schedule(0.1, 'w0').batch)).toBe(7); // beta 10 lets all in; the old fill bound never binds
  });

  it('leaves the baselines untouched: fifo and mlfq ignore the step cost', () => {
    for (const policy of ['fifo', 'mlfq'] as const) {
      const s = scheduler(policy);
      sevenTasks(s);
      expect(tasksIn(s.schedule(0.1, 'w0').batch)).toBe(7);
    }
  });

  it('prefers rows of tasks already in the batch when the budget is tight', () => {
    const s = scheduler('inlaid');
    sevenTasks(s);
    const plan = s.schedule(0.1, 'w0');
    expect(plan.batch).toHaveLength(9); // every request of the 3 admitted tasks: same-task rows cost nothing here
  });

  it('always admits the first row of an empty batch, even over budget', () => {
    const s = scheduler('inlaid', {}, { ...ADAPTER_HEAVY, baseS: 0.2 });
    sevenTasks(s);
    expect(admitted(s.schedule(0.1, 'w0').decisions)).toEqual(['t0-0']);
  });

  it('runs hopeless work at full size when no row could still meet its SLO', () => {
    const s = scheduler('inlaid');
    sevenTasks(s, 0);
    expect(tasksIn(s.schedule(10, 'w0').batch)).toBe(7); // all waited 10 s > TTFT 2 s
  });

  it('keeps the budget for hopeless work while requests that can still be saved are arriving', () => {
    const s = scheduler('inlaid');
    sevenTasks(s, 0);
    s.enqueue(request('t0-new', 't0', 32, 9.9)); // arrived 0.1 s ago: can still meet its TTFT
    const batch = s.schedule(10, 'w0').batch;
    expect(batch).toContain('t0-new');
    expect(tasksIn(batch)).toBe(3);
  });

  it('shrinks the budget by the recent prefill share', () => {
    const newTasks = (prefillTokenS: number): number => {
      const s = scheduler('inlaid', {}, { ...ADAPTER_HEAVY, baseS: 0, prefillTokenS });
      s.enqueue(request('a-0', 'a', 32, 0));
      s.schedule(0, 'w0'); // 32 prompt tokens prefilled at t = 0
      s.schedule(0.05, 'w0'); // a decode-only step: the worker has run 0.05 s
      sevenTasks(s, 0.1);
      return tasksIn(s.schedule(0.1, 'w0').batch.filter((id) => id !== 'a-0'));
    };
    expect(newTasks(0)).toBe(3); // 45 ms budget: task a + 3 more adapters
    // 16 ms of prefill in 50 ms: share 0.32, budget 45 ms x 0.68 = 30.6 ms: task a + 2 more.
    expect(newTasks(0.0005)).toBe(2);
  });
});

describe('step-budget arithmetic', () => {
  it('PrefillShare is prefill seconds over elapsed seconds, decayed, capped', () => {
    const p = new PrefillShare(1000);
    p.record(0, 0.5);
    expect(p.share()).toBe(0);
    p.record(1, 0);
    expect(p.share()).toBeCloseTo(0.5, 3);
    p.record(2, 0);
    expect(p.share()).toBeCloseTo(0.25, 3);
    p.record(3, 10);
    expect(p.share(0.8)).toBe(0.8);
    expect(() => new PrefillShare(0)).toThrow(/time constant/);
  });

  it('budget = safety x TPOT x (1 - prefill share)', () => {
    expect(stepBudgetS(0.05, 0.9, 0.2)).toBeCloseTo(0.036, 9);
  });

  it('projects a candidate at its context plus half its predicted remaining output', () => {
    const r = {
      spec: request('x', 't', 40, 0),
      generated: 0,
      prediction: { p50: 100, lo: 100, hi: 100, support: 1, points: [{ q: 0, value: 100 }, { q: 1, value: 100 }] },
    } as unknown as TrackedRequest;
    expect(midLifeKvTokens(r, 16)).toBe(48 + 50);
  });
});

import { resolveConfig } from './config';
import { Heap } from './heap';
import { InlaidPolicy } from './policies/inlaid';
import { Scheduler } from './scheduler';
import { StepGate } from './step-budget';
import { request, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { Decision, StepCost } from './types';
import { WorkerSlot } from './worker-slot';

const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);
// 10 ms base + 10 ms per distinct adapter; rows and KV free. Budget 0.95 x 50 ms = 47.5 ms: 3 adapters fit, 4 do not.
const ADAPTER_HEAVY: StepCost = { baseS: 0.01, decodeRowS: 0, adapterS: 0.01, kvTokenS: 0, prefillTokenS: 0 };
const SLO = { ttftS: 2, tpotS: 0.05 };

function tracked(id: string, task: string): TrackedRequest {
  return newTracked(request(id, task, 32, 0), SLO, {
    p50: 10, lo: 10, hi: 10, points: [{ q: 0, value: 10 }, { q: 1, value: 10 }], support: 0,
  }, 0);
}

describe('Heap.retain', () => {
  it('drops the refused items and keeps popping the rest in order', () => {
    const h = new Heap<number>((a, b) => a - b);
    for (const x of [9, 2, 7, 4, 1, 8, 3, 6, 5, 0]) h.push(x);
    h.retain((x) => x % 3 !== 0);
    const out: number[] = [];
    for (let x = h.pop(); x !== undefined; x = h.pop()) out.push(x);
    expect(out).toEqual([1, 2, 4, 5, 7, 8]);
  });
});

describe('StepGate.closedToNewTasks', () => {
  function slotWith(tasks: string[]): WorkerSlot {
    const slot = new WorkerSlot(worker({ stepCost: ADAPTER_HEAVY }));
    tasks.forEach((t, i) => slot.add(tracked(`r${i}`, t)));
    return slot;
  }

  it('is true only when one more adapter would exceed the budget while a row of a batch task still fits', () => {
    const gate = new StepGate();
    const three = slotWith(['a', 'b', 'c']); // 40 ms; a 4th adapter: 50 ms > 47.5 ms
    gate.begin(three, 0, 0.95, true);
    expect(gate.closed(3)).toBe(false);
    expect(gate.closedToNewTasks(3)).toBe(true);
    expect(gate.join(tracked('x', 'd'), 3)).toBe(false); // what it stands for: a new task's candidate is refused
    expect(gate.join(tracked('y', 'a'), 3)).toBe(true);
    const two = slotWith(['a', 'b']); // a 3rd adapter: 40 ms fits
    gate.begin(two, 0, 0.95, true);
    expect(gate.closedToNewTasks(2)).toBe(false);
    expect(gate.join(tracked('x', 'd'), 2)).toBe(true);
  });

  it('is false without a budget, without protection (nothing saveable) or for an empty batch', () => {
    const gate = new StepGate();
    gate.begin(slotWith(['a', 'b', 'c']), 0, undefined, true);
    expect(gate.closedToNewTasks(3)).toBe(false);
    const lost = slotWith(['a', 'b', 'c']);
    for (const r of lost.running.values()) r.firstTokenS = 5; // all started past their 2 s TTFT
    gate.begin(lost, 10, 0.95, false);
    expect(gate.closedToNewTasks(3)).toBe(false);
    gate.begin(slotWith([]), 0, 0.95, true);
    expect(gate.closedToNewTasks(0)).toBe(false);
  });

  it('with 300 other tasks waiting, inlaid still admits only rows of the tasks its budget allows', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 10, budgetSafety: 0.95 }, defaultSlo: SLO });
    s.onWorkerState(worker({ stepCost: ADAPTER_HEAVY }));
    for (const t of ['a', 'b', 'c']) s.enqueue(request(`${t}-0`, t, 32, 0));
    expect(admitted(s.schedule(0, 'w0').decisions).sort()).toEqual(['a-0', 'b-0', 'c-0']);
    for (let i = 0; i < 300; i++) s.enqueue(request(`n${i}-0`, `n${i}`, 32, 0.001 + i * 1e-6));
    s.enqueue(request('b-1', 'b', 32, 0.5));
    expect(admitted(s.schedule(0.5, 'w0').decisions)).toEqual(['b-1']);
  });
});

describe("inlaid.budgetFixedPrefill 'auto'", () => {
  it('is the default, with a limit of 0.4 x TPOT SLO, and is validated', () => {
    expect(resolveConfig().inlaid).toMatchObject({ budgetFixedPrefill: 'auto', budgetFixedPrefillMaxTpot: 0.4 });
    expect(() => resolveConfig({ inlaid: { budgetFixedPrefill: 'yes' as unknown as boolean } })).toThrow(/budgetFixedPrefill/);
    expect(() => resolveConfig({ inlaid: { budgetFixedPrefillMaxTpot: -1 } })).toThrow(/budgetFixedPrefillMaxTpot/);
  });

  it('counts the fixed prefill cost of the served fits (CPU 7.4 ms at 100 ms, H200 s8 11.6 ms at 50 ms), not the measured H200 (37 ms at 50 ms)', () => {
    const auto = new InlaidPolicy(resolveConfig().inlaid);
    expect(auto.countsFixedPrefill(0.0074, 0.1)).toBe(true);
    expect(auto.countsFixedPrefill(0.0116, 0.05)).toBe(true);
    expect(auto.countsFixedPrefill(0.037, 0.05)).toBe(false);
    expect(auto.countsFixedPrefill(0.02, 0.05)).toBe(true); // the limit itself
    expect(auto.countsFixedPrefill(0.0201, 0.05)).toBe(false);
    expect(new InlaidPolicy(resolveConfig({ inlaid: { budgetFixedPrefill: true } }).inlaid).countsFixedPrefill(0.037, 0.05)).toBe(true);
    expect(new InlaidPolicy(resolveConfig({ inlaid: { budgetFixedPrefill: false } }).inlaid).countsFixedPrefill(0.0116, 0.05)).toBe(false);
  });

  it('decides the step budget in the scheduler: 40 ms at a 50 ms TPOT is left out unless the limit is raised', () => {
    // As batch-gate.spec's budgetFixedPrefill case: 5 ms + 1 ms per row, one 40 ms prefill step at t = 0.
    const admittedAt = (inlaid: object): number => {
      const cost: StepCost = { baseS: 0.005, decodeRowS: 0.001, adapterS: 0, kvTokenS: 0, prefillTokenS: 0, prefillStepS: 0.04 };
      const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { budgetSafety: 0.9, batchedAdmission: { groupRequests: 16 }, ...inlaid } });
      s.onWorkerState(worker({ stepCost: cost }));
      s.enqueue(request('a', 't1', 32, 0));
      s.schedule(0, 'w0');
      s.schedule(0.05, 'w0');
      for (let i = 0; i < 30; i++) s.enqueue(request(`r${i}`, 't1', 32, 0.1));
      return admitted(s.schedule(0.1, 'w0').decisions).length;
    };
    expect(admittedAt({})).toBe(30); // 0.04 > 0.4 x 0.05: not counted
    expect(admittedAt({ budgetFixedPrefillMaxTpot: 1 })).toBeLessThan(5); // counted
  });
});

/**
 * The running batch's decode step as batch-gate.ts prices it: runningDecodeStepS (the spacing rule) and
 * budgetRoomFor (the budget room) share one shape of the running batch (rows, distinct adapters, KV at the current
 * context); the arrivals add their rows, new adapters and context + 1.
 */
import { budgetRoomFor, runningDecodeStepS } from './batch-gate';
import { request, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { StepCost } from './types';
import { WorkerSlot } from './worker-slot';

const COST: StepCost = { baseS: 0.01, decodeRowS: 0.001, adapterS: 0.002, kvTokenS: 0.00001, prefillTokenS: 0 };
const PREDICTION = { p50: 8, lo: 8, hi: 8, points: [{ q: 0, value: 8 }, { q: 1, value: 8 }], support: 0 };

function tracked(id: string, task: string, prompt: number, generated: number, tpotS: number): TrackedRequest {
  const r = newTracked(request(id, task, prompt, 0), { ttftS: 10, tpotS }, PREDICTION, 0);
  r.generated = generated;
  return r;
}

/** Rows a, a (100 tokens each) and b (50 + 10 generated): 3 rows, 2 adapters, 260 KV tokens. */
function busySlot(cost: StepCost | null = COST): WorkerSlot {
  const slot = new WorkerSlot(worker(cost === null ? {} : { stepCost: cost }));
  for (const r of [tracked('a0', 'a', 100, 0, 1), tracked('a1', 'a', 100, 0, 1), tracked('b0', 'b', 50, 10, 1)]) slot.add(r);
  return slot;
}

describe('the running batch in the batch gate', () => {
  it('runningDecodeStepS prices rows, distinct adapters and the context of the running batch', () => {
    expect(runningDecodeStepS(busySlot())).toBeCloseTo(0.01 + 3 * 0.001 + 2 * 0.002 + 260 * 0.00001, 12);
    expect(runningDecodeStepS(busySlot(null))).toBe(0);
    expect(runningDecodeStepS(new WorkerSlot(worker({ stepCost: COST })))).toBeCloseTo(0.01, 12);
  });

  it('budgetRoomFor adds the arrivals (a new adapter only for a task not in the batch) and takes the tightest TPOT', () => {
    // + a row of task a (40 tokens): 4 rows, 2 adapters, 301 KV tokens = 21.01 ms
    const same = [tracked('a2', 'a', 40, 0, 0.0211)];
    expect(budgetRoomFor(busySlot(), same, 1, 1)).toBe(true);
    expect(budgetRoomFor(busySlot(), [tracked('a2', 'a', 40, 0, 0.021)], 1, 1)).toBe(false);
    // + a row of task c: a third adapter, 23.01 ms
    expect(budgetRoomFor(busySlot(), [tracked('c0', 'c', 40, 0, 0.0211)], 1, 1)).toBe(false);
    expect(budgetRoomFor(busySlot(), [tracked('c0', 'c', 40, 0, 0.0231)], 1, 1)).toBe(true);
    // only the first n arrivals count; a running row's tighter TPOT binds too; safety scales the budget
    expect(budgetRoomFor(busySlot(), [...same, tracked('c0', 'c', 40, 0, 0.001)], 1, 1)).toBe(true);
    const tight = busySlot();
    tight.add(tracked('a3', 'a', 0, 0, 0.02));
    expect(budgetRoomFor(tight, [tracked('a2', 'a', 39, 0, 1)], 1, 1)).toBe(false);
    expect(budgetRoomFor(busySlot(), same, 1, 0.99)).toBe(false);
    expect(budgetRoomFor(busySlot(null), same, 1, 0.01)).toBe(true);
  });
});

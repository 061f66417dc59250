import { Scheduler } from './scheduler';
import { bankedSlackS } from './step-budget';
import { request, worker } from './testing';
import { TrackedRequest } from './tracked';
import { RequestSpec, StepCost } from './types';
import { LengthPredictor, Prediction } from './predictor/types';

// 10 ms base + 10 ms per distinct adapter; rows and KV free. TPOT 50 ms x safety 0.95 = 47.5 ms: 3 adapters fit.
const ADAPTER_HEAVY: StepCost = { baseS: 0.01, decodeRowS: 0, adapterS: 0.01, kvTokenS: 0, prefillTokenS: 0 };
const SLO = { ttftS: 2, tpotS: 0.05 };
const tasksIn = (batch: readonly string[]): number => new Set(batch.map((id) => id.split('-')[0])).size;

/** Every request is exactly `length` tokens long (so its remaining output is known). */
function fixedLength(length: number): LengthPredictor {
  const p: Prediction = { p50: length, lo: length, hi: length, support: 1, points: [{ q: 0, value: length }, { q: 1, value: length }] };
  return { name: 'fixed', predict: () => p, observe: () => undefined };
}

function scheduler(inlaid = {}, length = 135): Scheduler {
  const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 10, budgetSafety: 0.95, lostReserveQuantile: null, ...inlaid }, defaultSlo: SLO }, fixedLength(length));
  s.onWorkerState(worker({ stepCost: ADAPTER_HEAVY }));
  return s;
}

/**
 * Runs one saveable request "a-0" (arrived 8 s) alone from 8 s to `untilS` in steps of `stepS`, then queues seven
 * tasks of lost work (arrived at 0 s, 3 requests each) and `late`, and returns the next batch planned at `untilS`.
 */
function afterSaveableRow(s: Scheduler, stepS: number, untilS: number, late: readonly RequestSpec[] = []): readonly string[] {
  s.enqueue(request('a-0', 'a', 32, 8));
  expect(s.schedule(8, 'w0').batch).toEqual(['a-0']);
  for (let t = 8 + stepS; t <= untilS + 1e-9; t += stepS) {
    s.onToken('a-0', t);
    s.schedule(t, 'w0');
  }
  for (let i = 0; i < 21; i++) s.enqueue(request(`t${i % 7}-${i}`, `t${i % 7}`, 32, i * 1e-3));
  for (const r of late) s.enqueue(r);
  return s.schedule(untilS, 'w0').batch;
}

describe('saveable arrivals (the step budget protects only while one may arrive)', () => {
  it('runs lost work at full size once the newest arrival is past its TTFT window, even if it was served on time', () => {
    const s = scheduler();
    s.enqueue(request('x-0', 'x', 32, 5));
    s.schedule(5, 'w0');
    s.onToken('x-0', 5.02); // on time: TTFT 0.02 s
    s.onFinish('x-0', 5.02);
    for (let i = 0; i < 21; i++) s.enqueue(request(`t${i % 7}-${i}`, `t${i % 7}`, 32, i * 1e-3));
    // The newest arrival (5 s) is 5 s old at 10 s: nothing saveable can be arriving, every waiting request is lost.
    expect(tasksIn(s.schedule(10, 'w0').batch)).toBe(7);
  });
});

describe('lost work uses the banked slack of the saveable rows (inlaid.lostSlack)', () => {
  it("admits more lost tasks next to a saveable row that has decoded faster than its TPOT", () => {
    // a-0 decoded 125 tokens at 20 ms (SLO 50 ms) and has 10 left: 3.72 s banked, up to 0.35 s more per step.
    const on = afterSaveableRow(scheduler({ lostSlack: true }), 0.02, 10.5);
    expect(on).toContain('a-0');
    expect(tasksIn(on)).toBe(8); // a and all seven lost tasks
    // Off, the plain budget holds: 10 ms + a + 2 adapters = 40 ms <= 47.5 ms, a third would be 50 ms.
    const off = afterSaveableRow(scheduler({ lostSlack: false }), 0.02, 10.5);
    expect(tasksIn(off)).toBe(3);
  });

  it('gives nothing when the saveable row has no slack (it decoded at its TPOT)', () => {
    const batch = afterSaveableRow(scheduler({ lostSlack: true }, 60), 0.05, 10.5);
    expect(tasksIn(batch)).toBe(3);
  });

  it('keeps the plain budget while a request that can still meet its SLO may be arriving', () => {
    // b-0 arrived 0.1 s before the plan: saveable, and it goes first.
    const batch = afterSaveableRow(scheduler({ lostSlack: true }), 0.02, 10.5, [request('b-0', 'b', 32, 10.4)]);
    expect(batch).toEqual(expect.arrayContaining(['a-0', 'b-0']));
    expect(tasksIn(batch)).toBe(3); // a, b and one lost task: 10 + 3 x 10 = 40 ms; a fourth adapter would be 50 ms
  });

  it('bankedSlackS: TPOT x (generated - 1) minus the time since the first token, never below 0', () => {
    const r = (generated: number, firstTokenS: number | undefined): TrackedRequest =>
      ({ spec: request('r', 't', 8, 0), slo: SLO, generated, firstTokenS }) as unknown as TrackedRequest;
    expect(bankedSlackS(r(11, 1), 1.3)).toBeCloseTo(0.2, 9); // 10 intervals in 0.3 s against 0.5 s allowed
    expect(bankedSlackS(r(11, 1), 2)).toBe(0); // behind its TPOT: no slack
    expect(bankedSlackS(r(0, undefined), 5)).toBe(0);
  });
});

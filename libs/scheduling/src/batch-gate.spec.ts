import { Scheduler } from './scheduler';
import { request, worker } from './testing';
import { Decision, StepCost } from './types';

const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);
/** Decode steps too cheap for the step budget to bind; a step that prefills pays 40 ms more. */
const COST: StepCost = { baseS: 0.001, decodeRowS: 0, adapterS: 0, kvTokenS: 0, prefillTokenS: 0, prefillStepS: 0.04 };
const SLO = { ttftS: 2, tpotS: 0.05 };

/** A worker decoding request "a" (admitted at t=0, when nothing was decoding, so it was not held). */
function decoding(batched: object = {}, cost: StepCost | null = COST, policy: 'inlaid' | 'fifo' = 'inlaid'): Scheduler {
  const s = new Scheduler({ policy, defaultSlo: SLO, inlaid: { batchedAdmission: batched } });
  s.onWorkerState(worker(cost === null ? {} : { stepCost: cost }));
  s.enqueue(request('a', 't1', 32, 0));
  expect(admitted(s.schedule(0, 'w0').decisions)).toEqual(['a']);
  return s;
}

describe('batched prefill admission (inlaid)', () => {
  it('holds an arrival while decoding until prefillStepS / fixedShare has passed since the last prefill', () => {
    const s = decoding({ fixedShare: 0.25 }); // gap = 0.04 / 0.25 = 0.16 s
    s.enqueue(request('b', 't1', 32, 0.01));
    expect(admitted(s.schedule(0.01, 'w0').decisions)).toEqual([]);
    s.enqueue(request('c', 't1', 32, 0.1));
    expect(admitted(s.schedule(0.15, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.16, 'w0').decisions).sort()).toEqual(['b', 'c']);
  });

  it('by default (v6) lets the fixed cost take at most a fifth of the time: gap = prefillStepS / 0.2', () => {
    const s = decoding(); // gap = 0.04 / 0.2 = 0.2 s (0.16 s under the v5 default of 0.25)
    s.enqueue(request('b', 't1', 32, 0.01));
    expect(admitted(s.schedule(0.16, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.199, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.2, 'w0').decisions)).toEqual(['b']);
  });

  it('waits spacingSteps (default 8) decode steps of the running batch when they last longer than prefillStepS / fixedShare', () => {
    // One decoding row at 20 + 12 ms: 8 steps = 0.256 s > 0.04 / 0.2 = 0.2 s (two rows, 44 ms, fit the step budget).
    const slow: StepCost = { ...COST, baseS: 0.02, decodeRowS: 0.012 };
    const s = decoding({}, slow);
    s.enqueue(request('b', 't1', 32, 0.01));
    expect(admitted(s.schedule(0.2, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.255, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.257, 'w0').decisions)).toEqual(['b']);
    // Off (null), the fixedShare rule alone releases at 0.2 s; 2 steps (0.064 s) are shorter than it, so it decides.
    for (const [spacingSteps, at] of [[null, 0.2], [2, 0.2]] as const) {
      const t = decoding({ spacingSteps }, slow);
      t.enqueue(request('b', 't1', 32, 0.01));
      expect(admitted(t.schedule(at - 0.001, 'w0').decisions)).toEqual([]);
      expect(admitted(t.schedule(at, 'w0').decisions)).toEqual(['b']);
    }
  });

  it('rejects a spacingSteps outside (0, 100]', () => {
    expect(() => new Scheduler({ policy: 'inlaid', inlaid: { batchedAdmission: { spacingSteps: 0 } } })).toThrow(/spacingSteps/);
    expect(() => new Scheduler({ policy: 'inlaid', inlaid: { batchedAdmission: { spacingSteps: 101 } } })).toThrow(/spacingSteps/);
  });

  it('releases when the oldest saveable arrival has used holdFraction of its TTFT SLO', () => {
    const s = decoding({ fixedShare: 0.01, holdFraction: 0.25 }); // gap 4 s; hold 0.5 s
    s.enqueue(request('b', 't1', 32, 0.1));
    expect(admitted(s.schedule(0.59, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.6, 'w0').decisions)).toEqual(['b']);
  });

  it('with budgetRoom, the hold rule needs the step budget to take the waiting arrivals; the spacing rule still releases', () => {
    // Rows cost 20 ms: budget 0.95 x 50 ms = 47.5 ms takes two rows ("a" and one more), not three. Gap 0.04 / 0.04 = 1 s.
    const tight: StepCost = { ...COST, decodeRowS: 0.02 };
    for (const [budgetRoom, at, want] of [[false, 0.6, ['b']], [true, 0.6, []], [true, 0.99, []], [true, 1, ['b']]] as const) {
      const s = decoding({ fixedShare: 0.04, holdFraction: 0.25, budgetRoom }, tight);
      s.enqueue(request('b', 't1', 32, 0.1));
      s.enqueue(request('c', 't1', 32, 0.1));
      expect(admitted(s.schedule(at, 'w0').decisions)).toEqual(want);
    }
    // One arrival fits the budget next to "a": the hold rule releases at 0.6 s as without budgetRoom.
    const one = decoding({ fixedShare: 0.04, holdFraction: 0.25, budgetRoom: true }, tight);
    one.enqueue(request('b', 't1', 32, 0.1));
    expect(admitted(one.schedule(0.6, 'w0').decisions)).toEqual(['b']);
  });

  it('releases at once when groupRequests saveable arrivals are waiting', () => {
    const s = decoding({ fixedShare: 0.01, groupRequests: 3 });
    s.enqueue(request('b', 't1', 32, 0.01));
    s.enqueue(request('c', 't2', 32, 0.01));
    expect(admitted(s.schedule(0.02, 'w0').decisions)).toEqual([]);
    s.enqueue(request('d', 't1', 32, 0.02));
    expect(admitted(s.schedule(0.03, 'w0').decisions).sort()).toEqual(['b', 'c', 'd']);
  });

  it('does not count arrivals already past their TTFT as saveable', () => {
    const s = decoding({ fixedShare: 0.001, groupRequests: 2, holdFraction: 0.25 }); // gap 40 s
    s.enqueue(request('old', 't1', 32, 0.01));
    s.enqueue(request('new', 't1', 32, 2.5));
    // "old" is past its 2 s TTFT: neither the group rule (1 saveable) nor its slack releases.
    expect(admitted(s.schedule(2.6, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(3.0, 'w0').decisions).sort()).toEqual(['new', 'old']);
  });

  it('needRoom: the hold rule waits for rows (or KV) for the waiting arrivals; the spacing rule still releases', () => {
    const run = (needRoom: boolean, rows: number, kvBlocks: number): string[][] => {
      const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { batchedAdmission: { needRoom, fixedShare: 0.25, holdFraction: 0.05 } } });
      s.onWorkerState(worker({ stepCost: COST, maxBatchRows: rows, kvBlocksTotal: kvBlocks }));
      s.enqueue(request('a', 't1', 32, 0));
      s.schedule(0, 'w0');
      s.enqueue(request('b', 't1', 32, 0.01));
      s.enqueue(request('c', 't1', 32, 0.01));
      // t = 0.12: b and c have waited 0.11 s > hold 0.1 s; the spacing gap (0.16 s) has not passed.
      return [0.12, 0.16].map((t) => admitted(s.schedule(t, 'w0').decisions));
    };
    expect(run(false, 2, 1000)).toEqual([['b'], []]);
    expect(run(true, 2, 1000)).toEqual([[], ['b']]); // one free row for two arrivals: wait for the spacing rule
    expect(run(true, 3, 1000)).toEqual([['b', 'c'], []]);
    expect(run(true, 3, 8)).toEqual([[], ['b']]); // a: 3 blocks; b and c need 3 each, 8 in all
  });

  it('budgetFixedPrefill: the step budget also leaves room for the fixed prefill cost', () => {
    // Decode step = 5 ms + 1 ms per row; budget 0.9 x 50 ms x (1 - prefill share). One prefill step (40 ms fixed)
    // at t = 0 and a decode-only plan at t = 0.05 make the fixed share 0.8 (capped) when it counts, else 0.
    const admittedAt = (budgetFixedPrefill: boolean): number => {
      const cost: StepCost = { baseS: 0.005, decodeRowS: 0.001, adapterS: 0, kvTokenS: 0, prefillTokenS: 0, prefillStepS: 0.04 };
      const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { budgetFixedPrefill, budgetSafety: 0.9, batchedAdmission: { groupRequests: 16 } } });
      s.onWorkerState(worker({ stepCost: cost }));
      s.enqueue(request('a', 't1', 32, 0));
      s.schedule(0, 'w0');
      s.schedule(0.05, 'w0');
      for (let i = 0; i < 30; i++) s.enqueue(request(`r${i}`, 't1', 32, 0.1));
      return admitted(s.schedule(0.1, 'w0').decisions).length;
    };
    expect(admittedAt(false)).toBe(30);
    expect(admittedAt(true)).toBeLessThan(5);
  });

  it('admits at once when nothing is decoding', () => {
    const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { batchedAdmission: { fixedShare: 0.01 } } });
    s.onWorkerState(worker({ stepCost: COST }));
    s.enqueue(request('a', 't1', 32, 5));
    expect(admitted(s.schedule(5, 'w0').decisions)).toEqual(['a']);
  });

  it("is off under 'auto' without a fixed prefill-step cost, under 'off', and for the baselines", () => {
    const cases: Scheduler[] = [
      decoding({}, { ...COST, prefillStepS: 0 }),
      decoding({}, null),
      decoding({ mode: 'off' }),
      decoding({}, COST, 'fifo'),
    ];
    cases.forEach((s, i) => {
      s.enqueue(request('b', 't1', 32, 0.01));
      expect([i, admitted(s.schedule(0.01, 'w0').decisions)]).toEqual([i, ['b']]);
    });
  });

  it("'on' holds without a fixed cost, released only by slack or group", () => {
    const s = decoding({ mode: 'on', holdFraction: 0.25 }, { ...COST, prefillStepS: 0 });
    s.enqueue(request('b', 't1', 32, 0.01));
    expect(admitted(s.schedule(0.2, 'w0').decisions)).toEqual([]);
    expect(admitted(s.schedule(0.51, 'w0').decisions)).toEqual(['b']);
  });

  it('defaults to groups of 32, a step budget of 0.95 x the TPOT SLO (the v7 profile uses 1.0) and budgetRoom on', () => {
    const c = new Scheduler({}).config.inlaid;
    expect([c.batchedAdmission.groupRequests, c.budgetSafety, c.batchedAdmission.budgetRoom]).toEqual([32, 0.95, true]);
  });

  it('rejects invalid options', () => {
    expect(() => new Scheduler({ inlaid: { batchedAdmission: { holdFraction: 0 } } })).toThrow(/holdFraction/);
    expect(() => new Scheduler({ inlaid: { batchedAdmission: { groupRequests: 1.5 } } })).toThrow(/groupRequests/);
    expect(() => new Scheduler({ inlaid: { batchedAdmission: { fixedShare: 2 } } })).toThrow(/fixedShare/);
    expect(() => new Scheduler({ inlaid: { batchedAdmission: { mode: 'maybe' as 'on' } } })).toThrow(/mode/);
    expect(() => new Scheduler({ inlaid: { batchedAdmission: { budgetRoom: 1 as unknown as boolean } } })).toThrow(/budgetRoom/);
  });
});

import { Scheduler } from './scheduler';
import { DriveRequest, driveFixedStep, request, seededRandom, worker } from './testing';
import { newTracked, TrackedRequest } from './tracked';
import { TtftDeadlines } from './triage';
import { Decision } from './types';
import { WaitingQueues } from './waiting-queues';

const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);
const SLO = { ttftS: 2, tpotS: 0.1 };

function tracked(id: string, arrivalS: number): TrackedRequest {
  return newTracked(request(id, 't', 16, arrivalS), SLO, {
    p50: 5, lo: 1, hi: 10, support: 1, points: [{ q: 0, value: 1 }, { q: 1, value: 10 }],
  }, 0);
}

describe('TtftDeadlines', () => {
  it('marks waiting requests without a first token once their TTFT SLO has strictly passed, each once', () => {
    const d = new TtftDeadlines();
    const a = tracked('a', 0);
    const b = tracked('b', 1);
    const started = tracked('s', 0);
    started.phase = 'running';
    [a, b, started].forEach((r) => d.add(r));
    expect(d.expire(2)).toEqual([]);
    expect(d.expire(2.5).map((r) => r.spec.id)).toEqual(['a']);
    expect(d.expire(10).map((r) => r.spec.id)).toEqual(['b']);
    expect(d.expire(20)).toEqual([]);
    expect([a.hopeless, b.hopeless, started.hopeless]).toEqual([true, true, false]);
  });
});

describe('WaitingQueues.rekey', () => {
  it('moves a request to its new key without changing the count', () => {
    const q = new WaitingQueues();
    const a = tracked('a', 0);
    const b = tracked('b', 1);
    q.push(a, [0]);
    q.push(b, [1]);
    q.rekey(a, [2]);
    expect(q.size).toBe(2);
    expect(q.head('t')?.r.spec.id).toBe('b');
  });
});

describe('inlaid SLO triage', () => {
  /** A short request that has lost its TTFT and a long one that can still meet it, one row free. */
  const firstOf = (triage: boolean): string[] => {
    const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { triage, grouping: false } });
    for (let i = 0; i < 16; i++) s.predictor.observe('short', 32, 5);
    for (let i = 0; i < 16; i++) s.predictor.observe('long', 32, 300);
    s.onWorkerState(worker({ maxBatchRows: 1 }));
    s.enqueue(request('lost', 'short', 32, 0));
    s.enqueue(request('saveable', 'long', 32, 2.5));
    return admitted(s.schedule(3, 'w0').decisions);
  };

  it('serves a request that can still meet its SLO before one that cannot, whatever their predicted length', () => {
    expect(firstOf(true)).toEqual(['saveable']);
    expect(firstOf(false)).toEqual(['lost']); // plain SRTF
  });

  it('does not promote a starving lost request ahead of saveable ones', () => {
    const run = (triage: boolean): string[] => {
      const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, starvationS: 10, inlaid: { triage } });
      s.onWorkerState(worker({ maxBatchRows: 1 }));
      s.enqueue(request('old', 't1', 32, 0));
      s.enqueue(request('new', 't2', 32, 19.5));
      return admitted(s.schedule(20, 'w0').decisions);
    };
    expect(run(true)).toEqual(['new']);
    expect(run(false)).toEqual(['old']);
  });

  /** "late" was admitted 3 s after arriving (its first token misses the 2 s TTFT); "fresh" arrives then. */
  function lateThenFresh(inlaid: Record<string, unknown>, freshTask: string): Scheduler {
    const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { grouping: false, stepBudget: false, ...inlaid } });
    for (let i = 0; i < 16; i++) s.predictor.observe('t', 16, 200);
    for (let i = 0; i < 16; i++) s.predictor.observe('u', 16, 8);
    s.onWorkerState(worker({ kvBlocksTotal: 6, maxBatchRows: 8 }));
    s.enqueue(request('late', 't', 16, 0));
    s.schedule(3, 'w0');
    s.onToken('late', 3.1);
    s.enqueue(request('fresh', freshTask, 16, 3.1));
    return s;
  }

  it('reserves only the context of a running request that has lost its SLO (lostReserveQuantile off)', () => {
    // "late" predicts 200 tokens (13 blocks reserved when saveable); 6 blocks in all.
    expect(admitted(lateThenFresh({ triage: true, lostReserveQuantile: null }, 'u').schedule(3.1, 'w0').decisions)).toEqual(['fresh']);
    expect(admitted(lateThenFresh({ triage: false, lostReserveQuantile: null }, 'u').schedule(3.1, 'w0').decisions)).toEqual([]);
  });

  it('with lostReserveQuantile (0.1 in the v7 profile) a lost running request keeps a reservation for its output', () => {
    expect(admitted(lateThenFresh({ triage: true }, 'u').schedule(3.1, 'w0').decisions)).toEqual(['fresh']);
    expect(admitted(lateThenFresh({ triage: true, lostReserveQuantile: 0.1 }, 'u').schedule(3.1, 'w0').decisions)).toEqual([]);
    expect(admitted(lateThenFresh({ triage: true, lostReserveQuantile: 0 }, 'u').schedule(3.1, 'w0').decisions)).toEqual([]);
  });

  it('evicts a running request that has lost its SLO before a saveable one', () => {
    const victim = (triage: boolean): string[] => {
      const s = lateThenFresh({ triage, memoryAware: false }, 't');
      expect(admitted(s.schedule(3.1, 'w0').decisions)).toEqual(['fresh']);
      s.onToken('fresh', 3.2);
      s.onToken('late', 3.2, 48); // late: 16 + 49 tokens (5 blocks next step) + fresh 2 blocks > 6
      return s.schedule(3.2, 'w0').decisions.filter((d) => d.kind === 'preempt').map((d) => d.requestId);
    };
    expect(victim(true)).toEqual(['late']);
    expect(victim(false)).toEqual(['fresh']); // longest predicted remaining output
  });

  it('under an overload the lost requests wait behind saveable ones and are all served once it ends', () => {
    const rnd = seededRandom(3);
    const reqs: DriveRequest[] = [];
    let t = 0;
    for (let i = 0; t < 20; i++) {
      t += -Math.log(1 - rnd()) / 14; // capacity 2 rows / (4 tokens * 0.05 s) = 10 req/s
      reqs.push({ spec: request(`r${i}`, i % 2 === 0 ? 'a' : 'b', 16, t), outputTokens: 4 });
    }
    const met = (triage: boolean): number => {
      const s = new Scheduler({ policy: 'inlaid', defaultSlo: SLO, inlaid: { triage } });
      s.onWorkerState(worker({ maxBatchRows: 2 }));
      const res = driveFixedStep(s, reqs, 0.05, 100_000);
      expect(res.outcomes.size).toBe(reqs.length);
      return [...res.outcomes.values()].filter((o) => o.metSlo).length / reqs.length;
    };
    expect(met(true)).toBeGreaterThan(0.5);
    expect(met(true)).toBeGreaterThan(2 * met(false));
  });
});

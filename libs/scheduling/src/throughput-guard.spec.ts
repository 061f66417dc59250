import { resolveConfig } from './config';
import { Scheduler } from './scheduler';
import { request, worker } from './testing';
import { ThroughputGuard } from './throughput-guard';
import { StepCost } from './types';

// 10 ms base + 10 ms per distinct adapter; rows and KV free. TPOT 50 ms x safety 0.95 = 47.5 ms: 3 adapters fit.
const ADAPTER_HEAVY: StepCost = { baseS: 0.01, decodeRowS: 0, adapterS: 0.01, kvTokenS: 0, prefillTokenS: 0 };
const SLO = { ttftS: 2, tpotS: 0.05 };
const tasksIn = (batch: readonly string[]): number => new Set(batch.map((id) => id.split('-')[0])).size;

function saturated(throughputGuard: number | null): Scheduler {
  const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 10, budgetSafety: 0.95, throughputGuard }, defaultSlo: SLO });
  s.onWorkerState(worker({ stepCost: ADAPTER_HEAVY }));
  for (let i = 0; i < 21; i++) s.enqueue(request(`t${i % 7}-${i}`, `t${i % 7}`, 32, 0));
  return s;
}

describe('ThroughputGuard', () => {
  it('switches the budget off once the estimated loss passes epsilon of the elapsed time, and back on after the hold', () => {
    const g = new ThroughputGuard();
    expect(g.budgetOn(0, 0.01, 10)).toBe(true);
    g.record(0.01, 50, 100); // a step of 50 rows where 100 could run: 5 ms of fixed cost lost
    expect(g.lossS).toBeCloseTo(0.005, 12);
    expect(g.budgetOn(0.4, 0.01, 10)).toBe(false); // 1% of 0.4 s = 4 ms < 5 ms
    expect(new ThroughputGuard().budgetOn(0.4, 0.01, 10)).toBe(true); // nothing lost yet
  });

  it('holds the budget off until the loss is under epsilon x (elapsed - hold)', () => {
    const g = new ThroughputGuard();
    g.budgetOn(0, 0.01, 10);
    g.record(0.01, 50, 100); // 5 ms
    expect(g.budgetOn(0.3, 0.01, 10)).toBe(false); // 1% of 0.3 s = 3 ms < 5 ms
    expect(g.budgetOn(1, 0.01, 10)).toBe(false); // plain rule would turn it on (10 ms), the hold keeps it off
    expect(g.budgetOn(10.4, 0.01, 10)).toBe(false); // 1% of 0.4 s = 4 ms < 5 ms
    expect(g.budgetOn(10.6, 0.01, 10)).toBe(true); // 1% of 0.6 s = 6 ms >= 5 ms
  });

  it('records nothing for a full step', () => {
    const g = new ThroughputGuard();
    g.record(0.01, 100, 100);
    g.record(0.01, 0, 100);
    expect(g.lossS).toBe(0);
  });
});

describe('inlaid.throughputGuard', () => {
  it('is off by default and validated', () => {
    expect(resolveConfig().inlaid.throughputGuard).toBeNull();
    expect(() => resolveConfig({ inlaid: { throughputGuard: 0 } })).toThrow(/throughputGuard/);
    expect(() => resolveConfig({ inlaid: { throughputGuard: 0.6 } })).toThrow(/throughputGuard/);
    expect(resolveConfig({ inlaid: { throughputGuard: 0.01 } }).inlaid.throughputGuard).toBe(0.01);
  });

  it('lets a saturated worker fill its step once the budget has cost more than epsilon', () => {
    for (const guard of [null, 0.001]) {
      const s = saturated(guard);
      // First round: the budget admits 3 tasks (10 + 3 x 10 = 40 ms; a fourth would be 50 ms).
      expect(tasksIn(s.schedule(0, 'w0').batch)).toBe(3);
      // 50 ms later: without the guard the budget still holds; with it, the 10 x (1 - 9/21) ms lost exceed 0.1% of 50 ms.
      expect(tasksIn(s.schedule(0.05, 'w0').batch)).toBe(guard === null ? 3 : 7);
    }
  });
});

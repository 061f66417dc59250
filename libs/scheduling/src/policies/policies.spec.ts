import { resolveConfig, SchedulerConfigInput } from '../config';
import { Scheduler } from '../scheduler';
import { createPolicy } from './factory';
import { request, worker } from '../testing';
import { Decision } from '../types';

const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);

/** Teaches the predictor that `task` produces `len` output tokens for 32-token prompts. */
function teach(s: Scheduler, task: string, len: number, n = 16): void {
  for (let i = 0; i < n; i++) s.predictor.observe(task, 32, len);
}

describe('fifo', () => {
  it('admits in arrival order up to the row limit', () => {
    const s = new Scheduler({ policy: 'fifo' });
    s.onWorkerState(worker({ maxBatchRows: 2 }));
    s.enqueue(request('c', 't3', 32, 3));
    s.enqueue(request('a', 't1', 32, 1));
    s.enqueue(request('b', 't2', 32, 2));
    expect(admitted(s.schedule(3, 'w0').decisions)).toEqual(['a', 'b']);
  });

  it('blocks at the head of the line when the oldest request does not fit', () => {
    const s = new Scheduler({ policy: 'fifo' });
    s.onWorkerState(worker({ kvBlocksTotal: 10 }));
    s.enqueue(request('big0', 't1', 100, 0));
    s.schedule(0, 'w0');
    s.enqueue(request('big1', 't1', 80, 1));
    s.enqueue(request('small', 't2', 10, 2));
    expect(admitted(s.schedule(2, 'w0').decisions)).toEqual([]);
  });
});

describe('fcfs-maxloras', () => {
  it('skips requests whose adapter would exceed max_loras, keeping arrival order otherwise', () => {
    const s = new Scheduler({ policy: 'fcfs-maxloras', maxLoras: 2 });
    s.onWorkerState(worker());
    ['a', 'b', 'c', 'a'].forEach((t, i) => s.enqueue(request(`r${i}`, t, 32, i)));
    expect(admitted(s.schedule(4, 'w0').decisions)).toEqual(['r0', 'r1', 'r3']);
  });
});

describe('inlaid', () => {
  it('orders by shortest predicted remaining output', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { grouping: false } });
    teach(s, 'long', 500);
    teach(s, 'short', 10);
    s.onWorkerState(worker({ maxBatchRows: 1 }));
    s.enqueue(request('l', 'long', 32, 0));
    s.enqueue(request('s', 'short', 32, 0.5));
    expect(admitted(s.schedule(1, 'w0').decisions)).toEqual(['s']);
  });

  it('skips smaller-priority requests that do not fit instead of blocking', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { memoryAware: false } });
    s.onWorkerState(worker({ kvBlocksTotal: 10 }));
    s.enqueue(request('big0', 't1', 100, 0));
    s.schedule(0, 'w0');
    s.enqueue(request('big1', 't1', 80, 1));
    s.enqueue(request('small', 't2', 10, 2));
    expect(admitted(s.schedule(2, 'w0').decisions)).toEqual(['small']);
  });

  const taskOf = (id: string): string => `t${Number(id.slice(1)) % 7}`;
  const sevenTasks = (s: Scheduler): void => {
    for (let i = 0; i < 20; i++) s.enqueue(request(`r${i}`, `t${i % 7}`, 32, i * 0.01));
  };

  it('with a hard cap (no fill) never puts more than beta distinct tasks in a batch', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 3, workConserving: false } });
    s.onWorkerState(worker());
    sevenTasks(s);
    const plan = s.schedule(1, 'w0');
    expect(plan.batch).toHaveLength(Math.ceil(20 / 7) * 3 - 0);
    expect(new Set(plan.batch.map(taskOf)).size).toBe(3);
  });

  it('is work-conserving: rows beta would leave idle go to the other tasks', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 3 } });
    s.onWorkerState(worker());
    sevenTasks(s);
    expect(s.schedule(1, 'w0').batch).toHaveLength(20);
  });

  it('gives the beta group first claim on rows, then fills in priority order', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 2, agingTokensPerS: 0 } });
    teach(s, 'a', 50);
    teach(s, 'b', 60);
    teach(s, 'c', 5); // shortest, but its task arrives after the beta group is formed
    s.onWorkerState(worker({ maxBatchRows: 4 }));
    s.enqueue(request('a0', 'a', 32, 0));
    s.enqueue(request('b0', 'b', 32, 0));
    s.schedule(0, 'w0');
    ['a1', 'b1', 'c0', 'c1'].forEach((id, i) => s.enqueue(request(id, id[0], 32, 1 + i * 0.01)));
    expect(admitted(s.schedule(1, 'w0').decisions)).toEqual(['a1', 'b1']);
  });

  it('without the SLO-aware budget, stops the fill where the worker step cost would exceed the TPOT SLO', () => {
    // 10 ms base + 10 ms per adapter against a 55 ms TPOT: at most 4 adapters fit.
    const stepCost = { baseS: 0.01, decodeRowS: 0, adapterS: 0.01, kvTokenS: 0 };
    const s = new Scheduler({ policy: 'inlaid', inlaid: { beta: 2, stepBudget: false }, defaultSlo: { ttftS: 5, tpotS: 0.055 } });
    s.onWorkerState(worker({ stepCost }));
    sevenTasks(s);
    expect(new Set(s.schedule(1, 'w0').batch.map(taskOf)).size).toBe(4);
    expect(() => s.onWorkerState(worker({ stepCost: { ...stepCost, adapterS: -1 } }))).toThrow(/stepCost.adapterS/);
  });

  it('prefers tasks already in the running batch over shorter requests of other tasks', () => {
    const s = new Scheduler({ policy: 'inlaid' });
    teach(s, 'resident', 400);
    teach(s, 'other', 5);
    s.onWorkerState(worker({ maxBatchRows: 2 }));
    s.enqueue(request('r0', 'resident', 32, 0));
    s.schedule(0, 'w0');
    s.enqueue(request('o', 'other', 32, 1));
    s.enqueue(request('r1', 'resident', 32, 1));
    expect(admitted(s.schedule(1, 'w0').decisions)).toEqual(['r1']);
  });

  it('reserves KV for the predicted output when memory-aware', () => {
    const make = (memoryAware: boolean): string[] => {
      const s = new Scheduler({ policy: 'inlaid', inlaid: { memoryAware, grouping: false } });
      teach(s, 't', 300);
      s.onWorkerState(worker({ kvBlocksTotal: 30 }));
      s.enqueue(request('a', 't', 32, 0));
      s.enqueue(request('b', 't', 32, 0.1));
      return admitted(s.schedule(1, 'w0').decisions);
    };
    expect(make(false)).toEqual(['a', 'b']);
    expect(make(true)).toEqual(['a']);
  });
});

describe('inlaid memory-aware reservation quantile', () => {
  it('reserves the lower tail by default, the median when asked', () => {
    // Task t: outputs 20..400 (p10 ~ 58, p50 ~ 210). 30 blocks = 480 tokens; 32-token prompts.
    const admittedWith = (reserveQuantile?: number): number => {
      const s = new Scheduler({ policy: 'inlaid', inlaid: { grouping: false, stepBudget: false, ...(reserveQuantile === undefined ? {} : { reserveQuantile }) } });
      for (let i = 0; i < 20; i++) s.predictor.observe('t', 32, 20 + 20 * i);
      s.onWorkerState(worker({ kvBlocksTotal: 30 }));
      for (let i = 0; i < 6; i++) s.enqueue(request(`r${i}`, 't', 32, i * 0.01));
      return admitted(s.schedule(1, 'w0').decisions).length;
    };
    expect(admittedWith(0.5)).toBe(1); // 32 + ~210 tokens reserved: a second one would overcommit
    expect(admittedWith()).toBeGreaterThanOrEqual(4); // 32 + ~58 tokens each
  });
});

describe('mlfq', () => {
  const opts = { levels: 4, quantumTokens: 2, prefillTokensPerUnit: 10 };

  it('places long prompts in lower levels (skip-join)', () => {
    const s = new Scheduler({ policy: 'mlfq', mlfq: opts });
    s.onWorkerState(worker({ maxBatchRows: 1 }));
    s.enqueue(request('long', 't', 35, 0)); // 3.5 units > quantum 2 -> level 1
    s.enqueue(request('short', 't', 10, 1)); // 1 unit -> level 0
    expect(admitted(s.schedule(1, 'w0').decisions)).toEqual(['short']);
  });

  it('demotes a request after it uses its quantum, making it the first memory victim', () => {
    const s = new Scheduler({ policy: 'mlfq', mlfq: opts });
    s.onWorkerState(worker({ kvBlocksTotal: 100 }));
    s.enqueue(request('old', 't', 15, 0));
    s.enqueue(request('young', 't', 15, 1));
    expect(admitted(s.schedule(1, 'w0').decisions)).toEqual(['old', 'young']);
    s.onToken('old', 2);
    s.onToken('old', 3); // level 0 quantum (2) used up -> level 1
    s.onToken('young', 3); // still level 0
    s.onWorkerState(worker({ kvBlocksTotal: 2 })); // 17- and 16-token contexts need 2 blocks each
    const plan = s.schedule(4, 'w0');
    expect(plan.decisions).toEqual([{ kind: 'preempt', requestId: 'old', workerId: 'w0' }]);
    expect(plan.batch).toEqual(['young']);
  });
});

describe('preemption', () => {
  it('fifo evicts the latest arrival when KV runs short', () => {
    const s = new Scheduler({ policy: 'fifo' });
    s.onWorkerState(worker({ kvBlocksTotal: 100 }));
    ['a', 'b', 'c'].forEach((id, i) => s.enqueue(request(id, 't', 16, i)));
    s.schedule(3, 'w0');
    s.onWorkerState(worker({ kvBlocksTotal: 4 })); // each needs 2 blocks next step
    const plan = s.schedule(4, 'w0');
    expect(plan.decisions).toEqual([{ kind: 'preempt', requestId: 'c', workerId: 'w0' }]);
  });

  it('inlaid evicts the request with the longest predicted remaining output', () => {
    const s = new Scheduler({ policy: 'inlaid', inlaid: { memoryAware: false } });
    teach(s, 'long', 900);
    teach(s, 'short', 20);
    s.onWorkerState(worker({ kvBlocksTotal: 100 }));
    s.enqueue(request('s1', 'short', 16, 0));
    s.enqueue(request('l', 'long', 16, 1));
    s.enqueue(request('s2', 'short', 16, 2));
    s.schedule(3, 'w0');
    s.onWorkerState(worker({ kvBlocksTotal: 4 }));
    const plan = s.schedule(4, 'w0');
    expect(plan.decisions).toEqual([{ kind: 'preempt', requestId: 'l', workerId: 'w0' }]);
    expect(s.waitingCount).toBe(1);
  });

  it('drops a request that can never fit the worker KV', () => {
    const s = new Scheduler({ policy: 'fifo' });
    s.onWorkerState(worker({ kvBlocksTotal: 2 }));
    s.enqueue(request('huge', 't', 1000, 0));
    s.enqueue(request('ok', 't', 8, 1));
    const plan = s.schedule(1, 'w0');
    expect(plan.decisions).toEqual([
      { kind: 'abort', requestId: 'huge', reason: 'exceeds-kv' },
      { kind: 'admit', requestId: 'ok', workerId: 'w0', prefillTokens: 8 },
    ]);
  });
});

describe('Policy.refusesNewTasks (admission shortcut)', () => {
  const configs: SchedulerConfigInput[] = [
    { policy: 'inlaid' },
    { policy: 'inlaid', inlaid: { beta: 3, fillMaxTasks: 5 } },
    { policy: 'inlaid', inlaid: { grouping: false } },
    { policy: 'inlaid', inlaid: { workConserving: false } },
    { policy: 'fifo' },
    { policy: 'fcfs-maxloras', maxLoras: 4 },
    { policy: 'mlfq' },
  ];
  it.each(configs)('%j: when it says so, canJoin / canFill refuse a new task, and it stays so as the batch grows', (cfg) => {
    const p = createPolicy(resolveConfig(cfg));
    for (const phase of ['join', 'fill'] as const) {
      const ask = phase === 'join' ? p.canJoin.bind(p) : p.canFill.bind(p);
      let refused = false;
      const taskRows = new Map<string, number>();
      for (let n = 0; n <= 12; n++) {
        const batch = { taskRows };
        const says = p.refusesNewTasks?.(phase, batch) === true;
        if (refused) expect(says).toBe(true); // monotone in the batch's tasks
        if (says) expect(ask('new-task', batch)).toBe(false);
        refused = says;
        taskRows.set(`t${n}`, 1);
      }
    }
  });
});

/**
 * A task's own SLO reaches the scheduler's plan (task-slos.ts into the real Scheduler, configured as the gateway
 * configures it): the tasks table's targets become the per-task table, and a tight-SLO task is planned differently.
 */
import { parseSchedulingConfig } from '@inlaid/config';
import { Decision, RequestOutcome, request, Scheduler, worker } from '@inlaid/scheduling';
import { schedulerOptions } from './scheduler-options';
import { sloOfMs, taskSloMap } from './task-slos';

const DEFAULTS = { ttftMs: 5000, tpotMs: 200 };
const NO_WARNING = (m: string): never => {
  throw new Error(`unexpected warning: ${m}`);
};
const admitted = (ds: readonly Decision[]): string[] => ds.filter((d) => d.kind === 'admit').map((d) => d.requestId);

describe('taskSloMap', () => {
  it("gives each task with targets its own SLO in seconds, the other target from the defaults, and leaves the rest out", () => {
    const map = taskSloMap([
      { name: 'tight', ttftMs: 100, tpotMs: 20 },
      { name: 'ttft-only', ttftMs: 250.5, tpotMs: null },
      { name: 'tpot-only', ttftMs: null, tpotMs: 12.5 },
      { name: 'plain', ttftMs: null, tpotMs: null },
    ], DEFAULTS, NO_WARNING);
    expect(map).toEqual({
      tight: { ttftS: 0.1, tpotS: 0.02 },
      'ttft-only': { ttftS: 0.2505, tpotS: 0.2 },
      'tpot-only': { ttftS: 5, tpotS: 0.0125 },
    });
    expect(sloOfMs(DEFAULTS)).toEqual({ ttftS: 5, tpotS: 0.2 });
  });

  it('leaves out, naming it, a row whose targets are no positive finite number of seconds; the scheduler takes the rest', () => {
    const warnings: string[] = [];
    const map = taskSloMap([
      { name: 'good', ttftMs: 100, tpotMs: null },
      { name: 'tiny', ttftMs: 1e-322, tpotMs: null }, // positive, 0 s once divided by 1000
      { name: 'nan', ttftMs: null, tpotMs: NaN },
      { name: 'inf', ttftMs: Infinity, tpotMs: 20 },
      { name: 'neg', ttftMs: -1, tpotMs: 20 },
    ], DEFAULTS, (m) => warnings.push(m));
    expect(map).toEqual({ good: { ttftS: 0.1, tpotS: 0.2 } });
    expect(warnings.map((w) => /task "(\w+)"/.exec(w)?.[1])).toEqual(['tiny', 'nan', 'inf', 'neg']);
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    s.setTaskSlos(map);
    s.onWorkerState(worker());
    s.enqueue(request('g', 'good', 32, 0));
    s.schedule(0.3, 'w0');
    s.onToken('g', 0.3);
    expect(s.onFinish('g', 0.3).metSlo).toBe(false); // judged against its own 100 ms, not the 5 s default
  });
});

describe("the scheduler plans each task against its own SLO (inlaid, the gateway's defaults)", () => {
  /**
   * One row free; `tight` (TTFT 100 ms of its own) arrived first, `loose` (the 5 s default) 50 ms later. At 0.5 s the
   * tight request has lost its TTFT SLO: SLO triage orders it after the one that can still meet its SLO.
   */
  function firstAdmitted(rows: Parameters<typeof taskSloMap>[0]): { first: string[]; outcome: RequestOutcome } {
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    s.setTaskSlos(taskSloMap(rows, DEFAULTS, NO_WARNING));
    s.onWorkerState(worker({ maxBatchRows: 1 }));
    s.enqueue(request('t1', 'tight', 32, 0));
    s.enqueue(request('l1', 'loose', 32, 0.05));
    const first = admitted(s.schedule(0.5, 'w0').decisions);
    const id = first[0] as string;
    s.onToken(id, 0.6);
    s.onToken(id, 0.61);
    return { first, outcome: s.onFinish(id, 0.62) };
  }

  it("admits the loose task first when the tight task's own TTFT has passed; by arrival when both have the defaults", () => {
    const own = firstAdmitted([{ name: 'tight', ttftMs: 100, tpotMs: null }]);
    expect(own.first).toEqual(['l1']);
    const none = firstAdmitted([{ name: 'tight', ttftMs: null, tpotMs: null }]);
    expect(none.first).toEqual(['t1']);
    expect(none.outcome.metSlo).toBe(true); // 0.6 s TTFT against the 5 s default
  });

  it('judges a request against the SLO its task had when it arrived', () => {
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    s.onWorkerState(worker());
    s.enqueue(request('before', 'tight', 32, 0));
    s.setTaskSlos(taskSloMap([{ name: 'tight', ttftMs: 100, tpotMs: null }], DEFAULTS, NO_WARNING));
    s.enqueue(request('after', 'tight', 32, 0));
    expect(admitted(s.schedule(0.3, 'w0').decisions).sort()).toEqual(['after', 'before']);
    for (const id of ['before', 'after']) s.onToken(id, 0.3);
    expect(s.onFinish('before', 0.3).metSlo).toBe(true);
    expect(s.onFinish('after', 0.3).metSlo).toBe(false); // 300 ms TTFT against its 100 ms
  });

  it('gives a task named like an Object member the defaults, not the member', () => {
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    s.onWorkerState(worker());
    s.enqueue(request('c', 'constructor', 32, 0));
    s.schedule(0, 'w0');
    s.onToken('c', 1);
    expect(s.onFinish('c', 1).metSlo).toBe(true);
  });
});

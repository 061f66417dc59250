/**
 * SLO targets and verdicts for one request (pure). Same rules as the rollup trigger in the
 * 1738000000000-dashboard-rollups migration: TTFT = first token - arrival; TPOT = (finish - first token) /
 * (output tokens - 1), undefined with fewer than two output tokens (then it cannot miss); a request meets its
 * SLO when it completed and both are within target; aborted requests are not judged.
 */
import type { RequestRecord } from '@inlaid/db';

export interface SloTargets {
  readonly ttftMs: number;
  readonly tpotMs: number;
  readonly isDefault: boolean;
}

export interface TargetsTable {
  readonly defaults: SloTargets;
  readonly byTask: ReadonlyMap<string, SloTargets>;
}

export interface Timings {
  readonly ttftMs: number | null;
  readonly tpotMs: number | null;
  readonly latencyMs: number | null;
}

export interface SloVerdict {
  readonly eligible: boolean;
  readonly ttftOk: boolean;
  readonly tpotOk: boolean;
  readonly met: boolean;
}

type Timed = Pick<RequestRecord, 'arrival' | 'firstToken' | 'finish' | 'tokensOut' | 'status'>;

export function timings(r: Timed): Timings {
  const arrival = r.arrival.getTime();
  const first = r.firstToken?.getTime() ?? null;
  const finish = r.finish?.getTime() ?? null;
  return {
    ttftMs: first === null ? null : first - arrival,
    tpotMs: first !== null && finish !== null && r.tokensOut > 1 ? (finish - first) / (r.tokensOut - 1) : null,
    latencyMs: finish === null ? null : finish - arrival,
  };
}

export function targetsFor(table: TargetsTable, task: string): SloTargets {
  return table.byTask.get(task) ?? table.defaults;
}

export function judge(r: Timed, targets: SloTargets): SloVerdict {
  const t = timings(r);
  const completed = r.status === 'completed';
  const ttftOk = completed && t.ttftMs !== null && t.ttftMs <= targets.ttftMs;
  const tpotOk = completed && (t.tpotMs === null || t.tpotMs <= targets.tpotMs);
  return { eligible: r.status !== 'aborted', ttftOk, tpotOk, met: ttftOk && tpotOk };
}

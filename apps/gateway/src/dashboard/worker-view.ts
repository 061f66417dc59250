/** What the dashboard and /metrics show of one worker link (pure mapping of a WorkerSnapshot). */
import type { WorkerSnapshot } from '../workers/worker-connection';

export interface WorkerView {
  readonly addr: string;
  readonly workerId: string | null;
  readonly ready: boolean;
  readonly inFlight: number;
  readonly running: number;
  readonly waiting: number;
  readonly kvBlocksTotal: number;
  readonly kvBlocksUsed: number;
  readonly kvUsed: number | null;
  readonly stepsPerS: number;
  readonly residentAdapters: readonly string[];
  readonly lastError: string | null;
}

export function toWorkerView(s: WorkerSnapshot): WorkerView {
  const st = s.state;
  const total = st?.totalKvBlocks ?? 0;
  const used = total - (st?.freeKvBlocks ?? 0);
  return {
    addr: s.addr,
    workerId: s.workerId,
    ready: s.ready,
    inFlight: s.inFlight,
    running: st?.running ?? 0,
    waiting: st?.waiting ?? 0,
    kvBlocksTotal: total,
    kvBlocksUsed: total > 0 ? used : 0,
    kvUsed: total > 0 ? used / total : null,
    stepsPerS: st?.stepsPerS ?? 0,
    residentAdapters: [...(st?.residentAdapters ?? [])],
    lastError: s.lastError,
  };
}

/**
 * Per-task SLOs for the scheduler (pure): the tasks table's targets (ms; null = the default) as the Scheduler's per-task
 * table (seconds). A task that sets one target takes the other from the defaults, as the dashboard's rollup trigger does
 * (coalesce(tasks.slo_*, slo_defaults.*)); a task that sets neither is left out, so it gets the defaults.
 */
import type { Slo } from '@inlaid/scheduling';

/** SLO targets in milliseconds, as the tasks and slo_defaults tables and INLAID_SLO_TTFT_MS / TPOT_MS give them. */
export interface SloMs {
  readonly ttftMs: number;
  readonly tpotMs: number;
}

/** One tasks row's targets (tasks.slo_ttft_ms / slo_tpot_ms). */
export interface TaskSloRow {
  readonly name: string;
  readonly ttftMs: number | null;
  readonly tpotMs: number | null;
}

export function sloOfMs(ms: SloMs): Slo {
  return { ttftS: ms.ttftMs / 1000, tpotS: ms.tpotMs / 1000 };
}

export function taskSloMap(rows: readonly TaskSloRow[], defaults: SloMs): Readonly<Record<string, Slo>> {
  const own = rows.filter((r) => r.ttftMs !== null || r.tpotMs !== null);
  return Object.fromEntries(own.map((r) => [r.name, sloOfMs({ ttftMs: r.ttftMs ?? defaults.ttftMs, tpotMs: r.tpotMs ?? defaults.tpotMs })]));
}

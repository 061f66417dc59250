/**
 * Per-task SLOs for the scheduler (pure): the tasks table's targets (ms; null = the default) as the Scheduler's per-task
 * table (seconds). A task that sets one target takes the other from the defaults, as the dashboard's rollup trigger does
 * (coalesce(tasks.slo_*, slo_defaults.*)); a task that sets neither is left out, so it gets the defaults. A row whose
 * targets are no positive finite number of seconds is left out too, with a warning (the caller gives each once): the
 * scheduler refuses a table holding one, and one such row would otherwise cost every task its own. The columns' CHECKs
 * (migration 1764800000000) refuse such a target in SQL too; this stays as the scheduler's guard.
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

/** The targets a task is judged against: its own, each one it leaves null from the defaults. */
export function targetsOfRow(row: TaskSloRow, defaults: SloMs): SloMs {
  return { ttftMs: row.ttftMs ?? defaults.ttftMs, tpotMs: row.tpotMs ?? defaults.tpotMs };
}

const usable = (seconds: number): boolean => Number.isFinite(seconds) && seconds > 0;

export function taskSloMap(rows: readonly TaskSloRow[], defaults: SloMs, warn: (message: string) => void): Readonly<Record<string, Slo>> {
  const out: Record<string, Slo> = {};
  for (const r of rows) {
    if (r.ttftMs === null && r.tpotMs === null) continue;
    const ms = targetsOfRow(r, defaults);
    const slo = sloOfMs(ms);
    if (usable(slo.ttftS) && usable(slo.tpotS)) out[r.name] = slo;
    else warn(`task "${r.name}" is planned with the default SLO: its targets (${ms.ttftMs} / ${ms.tpotMs} ms) are not a positive number of seconds`);
  }
  return out;
}

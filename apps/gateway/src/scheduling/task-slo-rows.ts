/** Reads SLO targets from Postgres (the I/O around task-slos.ts), for the scheduler (task-slo-sync.ts) and the dashboard and /metrics (metrics/slo-targets.ts). */
import type { DataSource } from 'typeorm';
import type { SloMs, TaskSloRow } from './task-slos';

/** The tasks that set at least one target of their own. */
export function readTaskTargetRows(db: DataSource): Promise<TaskSloRow[]> {
  return db.query(`SELECT name, slo_ttft_ms AS "ttftMs", slo_tpot_ms AS "tpotMs" FROM tasks WHERE slo_ttft_ms IS NOT NULL OR slo_tpot_ms IS NOT NULL`);
}

/** The slo_defaults row; undefined when the migrations have not run. */
export async function readSloDefaults(db: DataSource): Promise<SloMs | undefined> {
  const [d]: SloMs[] = await db.query(`SELECT ttft_ms AS "ttftMs", tpot_ms AS "tpotMs" FROM slo_defaults WHERE id = 1`);
  return d;
}

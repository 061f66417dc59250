/** Reads SLO targets from Postgres: the slo_defaults row and the tasks that set their own. */
import { DataSource } from 'typeorm';
import type { SloTargets, TargetsTable } from './slo';

export async function readTargets(db: DataSource): Promise<TargetsTable> {
  const [d]: Array<{ ttftMs: number; tpotMs: number }> = await db.query(
    `SELECT ttft_ms AS "ttftMs", tpot_ms AS "tpotMs" FROM slo_defaults WHERE id = 1`,
  );
  if (d === undefined) throw new Error('slo_defaults has no row; run the migrations');
  const defaults: SloTargets = { ttftMs: d.ttftMs, tpotMs: d.tpotMs, isDefault: true };
  const rows: Array<{ name: string; ttft: number | null; tpot: number | null }> = await db.query(
    `SELECT name, slo_ttft_ms AS ttft, slo_tpot_ms AS tpot FROM tasks WHERE slo_ttft_ms IS NOT NULL OR slo_tpot_ms IS NOT NULL`,
  );
  const byTask = new Map<string, SloTargets>();
  for (const r of rows) {
    byTask.set(r.name, { ttftMs: r.ttft ?? defaults.ttftMs, tpotMs: r.tpot ?? defaults.tpotMs, isDefault: false });
  }
  return { defaults, byTask };
}

/**
 * The dashboard's default SLO targets are the scheduler's: the gateway writes INLAID_SLO_TTFT_MS / INLAID_SLO_TPOT_MS into
 * the slo_defaults row, which the rollup trigger (SLO met or missed, per record, as it is written), the dashboard and
 * /metrics read for every task without targets of its own. Written at start (scheduling/task-slo-sync.ts), before the
 * gateway serves, and again at a later read that finds it changed (with a warning): gateways sharing a database should
 * share these settings.
 */
import type { DataSource } from 'typeorm';
import type { SloMs } from '../scheduling/task-slos';

export async function writeSloDefaults(db: DataSource, slo: SloMs): Promise<void> {
  await db.query(
    `INSERT INTO slo_defaults (id, ttft_ms, tpot_ms) VALUES (1, $1, $2)
     ON CONFLICT (id) DO UPDATE SET ttft_ms = EXCLUDED.ttft_ms, tpot_ms = EXCLUDED.tpot_ms`,
    [slo.ttftMs, slo.tpotMs],
  );
}

/**
 * SLO targets keep fractions of a millisecond: tasks.slo_ttft_ms / slo_tpot_ms and slo_defaults.ttft_ms / tpot_ms become
 * double precision, as POST /v1/tasks `slo` and INLAID_SLO_TTFT_MS / INLAID_SLO_TPOT_MS accept them. The gateway writes
 * both (a task's `slo` into its row when onboarding validates it; its configured defaults into slo_defaults at start), so
 * the rollup trigger and the scheduler judge against the same targets. Tasks written before take the `slo` of their live
 * onboard/load job (newest first, then by id): a deleted or failed job's targets are no task's now (the name may be
 * served from a worker's own adapters). The ALTERs wait at most LOCK_TIMEOUT for their locks (a busy records writer
 * must not queue every reader of tasks behind them): past it the migration fails and can be run again. Each column gets a
 * CHECK that its target is NULL or SLO_MS_MIN..SLO_MS_MAX ms (as the API bounds `slo` and the config the defaults; libs/config scheduling-config.ts), so a row
 * written in SQL cannot hold one the scheduler refuses (NaN, Infinity, 1e-322) while the rollup trigger and /metrics
 * judge with it. A target written before above SLO_MS_MAX (the columns were positive integers: up to 2147483647, e.g.
 * INT_MAX as "no SLO") is first clamped to it, so every row passes and the CHECKs are validated (a NOT VALID CHECK
 * would still refuse any later UPDATE of such a row, even of its status); the backfill takes only a job whose targets
 * are in range. Down drops the CHECKs and rounds up (a target never tightens; at least 1, at
 * most integer's largest, a NULL staying NULL) and leaves the backfilled targets in place.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const COLUMNS = [['tasks', ['slo_ttft_ms', 'slo_tpot_ms']], ['slo_defaults', ['ttft_ms', 'tpot_ms']]] as const;
const LOCK_TIMEOUT = '5s';
/** Frozen here: the bounds on an SLO target in ms (libs/config scheduling-config.ts SLO_MS_MIN / SLO_MS_MAX). */
const MIN_MS = 0.001;
const MAX_MS = 1e9;
const check = (table: string, col: string) => `"${table}_${col}_range"`;
const inRange = (v: string) => `(${v} IS NULL OR ${v} BETWEEN ${MIN_MS} AND ${MAX_MS})`;
/** Frozen here: the statuses of a job whose task still holds its name (task-job.entity.ts LIVE_JOB_PREDICATE, migration 1764600000000). */
const LIVE = `"kind" IN ('onboard', 'load') AND "status" IN ('queued', 'validating', 'loading', 'quantizing', 'activating', 'active', 'serving')`;

export class SloTargetsMs1764800000000 implements MigrationInterface {
  name = 'SloTargetsMs1764800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    for (const [table, cols] of COLUMNS) {
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ALTER COLUMN "${c}" TYPE double precision`).join(', ')}`);
    }
    await q.query(`
      UPDATE "tasks" t SET "slo_ttft_ms" = (j.slo ->> 'ttft_ms')::float8, "slo_tpot_ms" = (j.slo ->> 'tpot_ms')::float8
      FROM (SELECT DISTINCT ON ("task") "task", "slo" FROM "task_jobs" WHERE ${LIVE} ORDER BY "task", "created_at" DESC, "id" DESC) j
      WHERE j.task = t.name AND j.slo IS NOT NULL AND t.slo_ttft_ms IS NULL AND t.slo_tpot_ms IS NULL
        AND ${inRange(`(j.slo ->> 'ttft_ms')::float8`)} AND ${inRange(`(j.slo ->> 'tpot_ms')::float8`)}`);
    for (const [table, cols] of COLUMNS) {
      for (const c of cols) {
        await q.query(`UPDATE "${table}" SET "${c}" = LEAST(GREATEST("${c}", ${MIN_MS}), ${MAX_MS}) WHERE NOT ${inRange(`"${c}"`)}`);
      }
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ADD CONSTRAINT ${check(table, c)} CHECK ${inRange(`"${c}"`)}`).join(', ')}`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    for (const [table, cols] of COLUMNS) {
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `DROP CONSTRAINT IF EXISTS ${check(table, c)}`).join(', ')}`);
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ALTER COLUMN "${c}" TYPE integer USING (CASE WHEN "${c}" IS NULL THEN NULL ELSE LEAST(GREATEST(ceil("${c}"), 1), 2147483647) END)::integer`).join(', ')}`);
    }
  }
}

/**
 * SLO targets keep fractions of a millisecond: tasks.slo_ttft_ms / slo_tpot_ms and slo_defaults.ttft_ms / tpot_ms become
 * double precision, as POST /v1/tasks `slo` and INLAID_SLO_TTFT_MS / INLAID_SLO_TPOT_MS accept them. The gateway writes
 * both (a task's `slo` into its row when onboarding validates it; its configured defaults into slo_defaults at start), so
 * the rollup trigger and the scheduler judge against the same targets. Tasks written before take the `slo` of their live
 * onboard/load job (newest first, then by id): a deleted or failed job's targets are no task's now (the name may be
 * served from a worker's own adapters). The ALTERs wait at most LOCK_TIMEOUT for their locks (a busy records writer
 * must not queue every reader of tasks behind them): past it the migration fails and can be run again. Down rounds up (a
 * target never tightens; past integer's range, its largest, a NULL staying NULL) and leaves the backfilled targets in place.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const COLUMNS = [['tasks', ['slo_ttft_ms', 'slo_tpot_ms']], ['slo_defaults', ['ttft_ms', 'tpot_ms']]] as const;
const LOCK_TIMEOUT = '5s';
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
      WHERE j.task = t.name AND j.slo IS NOT NULL AND t.slo_ttft_ms IS NULL AND t.slo_tpot_ms IS NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    for (const [table, cols] of COLUMNS) {
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ALTER COLUMN "${c}" TYPE integer USING (CASE WHEN "${c}" IS NULL THEN NULL ELSE LEAST(ceil("${c}"), 2147483647) END)::integer`).join(', ')}`);
    }
  }
}

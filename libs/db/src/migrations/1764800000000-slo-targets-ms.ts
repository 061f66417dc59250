/**
 * SLO targets keep fractions of a millisecond: tasks.slo_ttft_ms / slo_tpot_ms and slo_defaults.ttft_ms / tpot_ms become
 * double precision, as POST /v1/tasks `slo` and INLAID_SLO_TTFT_MS / INLAID_SLO_TPOT_MS accept them. The gateway writes
 * both (a task's `slo` into its row when onboarding validates it; its configured defaults into slo_defaults at start), so
 * the rollup trigger and the scheduler judge against the same targets. Tasks written before take the `slo` of their latest
 * onboard/load job. Down rounds up (a target never tightens) and leaves the backfilled targets in place.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const COLUMNS = [['tasks', ['slo_ttft_ms', 'slo_tpot_ms']], ['slo_defaults', ['ttft_ms', 'tpot_ms']]] as const;

export class SloTargetsMs1764800000000 implements MigrationInterface {
  name = 'SloTargetsMs1764800000000';

  async up(q: QueryRunner): Promise<void> {
    for (const [table, cols] of COLUMNS) {
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ALTER COLUMN "${c}" TYPE double precision`).join(', ')}`);
    }
    await q.query(`
      UPDATE "tasks" t SET "slo_ttft_ms" = (j.slo ->> 'ttft_ms')::float8, "slo_tpot_ms" = (j.slo ->> 'tpot_ms')::float8
      FROM (SELECT DISTINCT ON ("task") "task", "slo" FROM "task_jobs" WHERE "kind" IN ('onboard', 'load') ORDER BY "task", "created_at" DESC) j
      WHERE j.task = t.name AND j.slo IS NOT NULL AND t.slo_ttft_ms IS NULL AND t.slo_tpot_ms IS NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    for (const [table, cols] of COLUMNS) {
      await q.query(`ALTER TABLE "${table}" ${cols.map((c) => `ALTER COLUMN "${c}" TYPE integer USING ceil("${c}")::integer`).join(', ')}`);
    }
  }
}

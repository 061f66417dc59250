/**
 * Dashboard storage: per-task SLO targets (plus one row of defaults), and rollups of request_records kept by
 * a statement-level trigger: per task per hour and per day (counts + latency histograms), and for all tasks
 * together (task = '') per minute, hour and day (counts only at the minute level), so the dashboard reads
 * thousands of rollup rows instead of millions of records. Histogram buckets (ms) are frozen here: the
 * gateway's LATENCY_BOUNDS_MS must match. SLO met/missed is decided when a record is inserted, against the
 * targets in force then.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';

const BOUNDS_MS = [1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000,
  7500, 10000, 15000, 20000, 30000, 60000, 120000];
const HOUR = `make_interval(hours => 1)`;
const DAY = `make_interval(days => 1)`;
const MINUTE = `make_interval(mins => 1)`;
const ORIGIN = `TIMESTAMPTZ '2000-01-01 00:00:00+00'`;

/** Rollup count columns and how one group of records (rows of `m` below) fills them. */
const COUNTS: ReadonlyArray<readonly [string, string]> = [
  ['requests', `count(*)`],
  ['completed', `count(*) FILTER (WHERE status = 'completed')`],
  ['aborted', `count(*) FILTER (WHERE status = 'aborted')`],
  ['failed', `count(*) FILTER (WHERE status = 'failed')`],
  ['rejected', `count(*) FILTER (WHERE status = 'rejected')`],
  ['slo_eligible', `count(*) FILTER (WHERE status <> 'aborted')`],
  ['ttft_met', `count(*) FILTER (WHERE ttft_ok)`],
  ['tpot_met', `count(*) FILTER (WHERE tpot_ok)`],
  ['slo_met', `count(*) FILTER (WHERE ttft_ok AND tpot_ok)`],
  ['tokens_in', `coalesce(sum(tokens_in), 0)`],
  ['tokens_out', `coalesce(sum(tokens_out), 0)`],
  ['ttft_sum_ms', `coalesce(sum(ttft) FILTER (WHERE status = 'completed'), 0)`],
  ['ttft_count', `count(ttft) FILTER (WHERE status = 'completed')`],
  ['latency_sum_ms', `coalesce(sum(latency) FILTER (WHERE status = 'completed'), 0)`],
  ['latency_count', `count(latency) FILTER (WHERE status = 'completed')`],
];
const NAMES = COUNTS.map(([c]) => c).join(', ');
const FIRST = COUNTS.map(([c, e]) => `${e} AS ${c}`).join(', ');
const SUMS = COUNTS.map(([c]) => `sum(${c})`).join(', ');

/** Per-row timings (ms) and SLO verdicts of the records in `source`. */
function derived(source: string): string {
  return `
    d AS (
      SELECT r.task, r.arrival, r.status, r.tokens_in, r.tokens_out,
        CASE WHEN r.first_token IS NOT NULL THEN date_part('epoch', r.first_token - r.arrival) * 1000 END AS ttft,
        CASE WHEN r.first_token IS NOT NULL AND r.finish IS NOT NULL AND r.tokens_out > 1
          THEN date_part('epoch', r.finish - r.first_token) * 1000 / (r.tokens_out - 1) END AS tpot,
        CASE WHEN r.finish IS NOT NULL THEN date_part('epoch', r.finish - r.arrival) * 1000 END AS latency,
        coalesce(t.slo_ttft_ms, s.ttft_ms) AS ttft_target, coalesce(t.slo_tpot_ms, s.tpot_ms) AS tpot_target
      FROM ${source} r LEFT JOIN tasks t ON t.name = r.task CROSS JOIN slo_defaults s
    ),
    m AS (
      SELECT d.*, (d.status = 'completed' AND d.ttft IS NOT NULL AND d.ttft <= d.ttft_target) AS ttft_ok,
        (d.status = 'completed' AND (d.tpot IS NULL OR d.tpot <= d.tpot_target)) AS tpot_ok
      FROM d
    )`;
}

/**
 * Two upserts folding the records of `source` into the rollups. Records are grouped once per task and hour
 * (and once per minute for all tasks); days and the all-tasks ('') rows are summed from those groups.
 * Rows are upserted in key order so concurrent writers cannot deadlock.
 */
export function rollupStatements(source: string): string[] {
  const counts = `
    WITH ${derived(source)},
    h AS (SELECT date_bin(${HOUR}, arrival, ${ORIGIN}) AS hour, task, ${FIRST} FROM m GROUP BY 1, 2),
    mi AS (SELECT date_bin(${MINUTE}, arrival, ${ORIGIN}) AS minute, ${FIRST} FROM m GROUP BY 1),
    r AS (
      SELECT 3600 AS resolution_s, hour AS bucket_start, task, ${NAMES} FROM h
      UNION ALL SELECT 86400, date_bin(${DAY}, hour, ${ORIGIN}), task, ${SUMS} FROM h GROUP BY 2, 3
      UNION ALL SELECT 3600, hour, '', ${SUMS} FROM h GROUP BY 2
      UNION ALL SELECT 86400, date_bin(${DAY}, hour, ${ORIGIN}), '', ${SUMS} FROM h GROUP BY 2
      UNION ALL SELECT 60, minute, '', ${NAMES} FROM mi
    )
    INSERT INTO request_rollups AS x (resolution_s, bucket_start, task, ${NAMES})
    SELECT * FROM r ORDER BY 1, 2, 3
    ON CONFLICT (resolution_s, bucket_start, task) DO UPDATE SET
      ${COUNTS.map(([c]) => `${c} = x.${c} + EXCLUDED.${c}`).join(', ')}`;
  const hist = `
    WITH ${derived(source)},
    hh AS (
      SELECT date_bin(${HOUR}, m.arrival, ${ORIGIN}) AS hour, m.task, v.metric,
        width_bucket(v.value, ARRAY[${BOUNDS_MS.join(', ')}]::float8[])::smallint AS bucket, count(*) AS n
      FROM m CROSS JOIN LATERAL (VALUES (0::smallint, m.ttft), (1::smallint, m.tpot), (2::smallint, m.latency)) AS v(metric, value)
      WHERE m.status = 'completed' AND v.value IS NOT NULL
      GROUP BY 1, 2, 3, 4
    ),
    r AS (
      SELECT 3600 AS resolution_s, hour AS bucket_start, task, metric, bucket, n FROM hh
      UNION ALL SELECT 86400, date_bin(${DAY}, hour, ${ORIGIN}), task, metric, bucket, sum(n) FROM hh GROUP BY 2, 3, 4, 5
    )
    INSERT INTO request_rollup_hist AS x (resolution_s, bucket_start, task, metric, bucket, count)
    SELECT * FROM r ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (resolution_s, bucket_start, task, metric, bucket) DO UPDATE SET count = x.count + EXCLUDED.count`;
  return [counts, hist];
}

export class DashboardRollups1738000000000 implements MigrationInterface {
  name = 'DashboardRollups1738000000000';

  async up(q: QueryRunner): Promise<void> {
    for (const col of ['slo_ttft_ms', 'slo_tpot_ms']) {
      await q.query(`ALTER TABLE "tasks" ADD COLUMN IF NOT EXISTS "${col}" integer CHECK ("${col}" IS NULL OR "${col}" > 0)`);
    }
    await q.query(`
      CREATE TABLE "slo_defaults" (
        "id" smallint PRIMARY KEY DEFAULT 1 CHECK ("id" = 1),
        "ttft_ms" integer NOT NULL CHECK ("ttft_ms" > 0),
        "tpot_ms" integer NOT NULL CHECK ("tpot_ms" > 0)
      )`);
    await q.query(`INSERT INTO "slo_defaults" ("id", "ttft_ms", "tpot_ms") VALUES (1, 1000, 100)`);
    await q.query(`
      CREATE TABLE "request_rollups" (
        "resolution_s" integer NOT NULL,
        "bucket_start" timestamptz NOT NULL,
        "task" text NOT NULL,
        "requests" bigint NOT NULL, "completed" bigint NOT NULL, "aborted" bigint NOT NULL, "failed" bigint NOT NULL,
        "rejected" bigint NOT NULL, "slo_eligible" bigint NOT NULL, "ttft_met" bigint NOT NULL, "tpot_met" bigint NOT NULL,
        "slo_met" bigint NOT NULL, "tokens_in" bigint NOT NULL, "tokens_out" bigint NOT NULL,
        "ttft_sum_ms" double precision NOT NULL, "ttft_count" bigint NOT NULL,
        "latency_sum_ms" double precision NOT NULL, "latency_count" bigint NOT NULL,
        PRIMARY KEY ("resolution_s", "bucket_start", "task")
      )`);
    await q.query(`CREATE INDEX "idx_request_rollups_task" ON "request_rollups" ("resolution_s", "task", "bucket_start")`);
    await q.query(`
      CREATE TABLE "request_rollup_hist" (
        "resolution_s" integer NOT NULL,
        "bucket_start" timestamptz NOT NULL,
        "task" text NOT NULL,
        "metric" smallint NOT NULL,
        "bucket" smallint NOT NULL,
        "count" bigint NOT NULL,
        PRIMARY KEY ("resolution_s", "bucket_start", "task", "metric", "bucket")
      )`);
    await q.query(`CREATE INDEX "idx_request_rollup_hist_task" ON "request_rollup_hist" ("resolution_s", "task", "bucket_start")`);
    await q.query(`CREATE INDEX "idx_request_records_errors" ON "request_records" ("arrival" DESC) WHERE "status" IN ('failed', 'rejected')`);
    await q.query(`CREATE INDEX "idx_request_records_task_arrival" ON "request_records" ("task", "arrival")`);
    await q.query(`
      CREATE FUNCTION inlaid_rollup_request_records() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $fn$
      BEGIN
        ${rollupStatements('new_records').join(';\n')};
        RETURN NULL;
      END
      $fn$`);
    await q.query(`
      CREATE TRIGGER "request_records_rollup" AFTER INSERT ON "request_records"
      REFERENCING NEW TABLE AS new_records FOR EACH STATEMENT EXECUTE FUNCTION inlaid_rollup_request_records()`);
    for (const sql of rollupStatements('request_records')) await q.query(sql); // backfill existing records
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TRIGGER "request_records_rollup" ON "request_records"`);
    await q.query(`DROP FUNCTION inlaid_rollup_request_records()`);
    await q.query(`DROP INDEX "idx_request_records_task_arrival"`);
    await q.query(`DROP INDEX "idx_request_records_errors"`);
    await q.query(`DROP TABLE "request_rollup_hist"`);
    await q.query(`DROP TABLE "request_rollups"`);
    await q.query(`DROP TABLE "slo_defaults"`);
    await q.query(`ALTER TABLE "tasks" DROP COLUMN "slo_tpot_ms", DROP COLUMN "slo_ttft_ms"`);
  }
}

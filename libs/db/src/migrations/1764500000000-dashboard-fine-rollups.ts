/**
 * Dashboard rollups, second version, so every dashboard query reads a bounded number of pre-summed rows:
 * - request_rollups gains per-task rows per minute (it had per-task hours and days, all tasks per minute).
 * - request_latency_rollups replaces request_rollup_hist: TTFT/TPOT/latency bucket counts over fixed
 *   log-spaced buckets (0.1 ms · 1.1^k, percentiles within 4.8%), per task per hour and day and for all
 *   tasks (task = '') per minute, hour and day. Its primary key leads with the task and carries the count, so
 *   the dashboard reads a few tasks' histograms with index-only range scans.
 * The same statement-level trigger keeps both (its function is replaced); existing records are backfilled
 * here. The buckets are frozen: the gateway's HIST_BOUNDS_MS (dashboard/log-buckets.ts) must match.
 */
import { MigrationInterface, QueryRunner } from 'typeorm';
import { rollupStatements as v1Statements } from './1738000000000-dashboard-rollups';

export const HIST_BOUNDS_MS = [0.1, 0.11, 0.121, 0.1331, 0.1464, 0.1611, 0.1772, 0.1949, 0.2144, 0.2358, 0.2594, 0.2853,
  0.3138, 0.3452, 0.3797, 0.4177, 0.4595, 0.5054, 0.556, 0.6116, 0.6727, 0.74, 0.814, 0.8954, 0.985, 1.083, 1.192, 1.311,
  1.442, 1.586, 1.745, 1.919, 2.111, 2.323, 2.555, 2.81, 3.091, 3.4, 3.74, 4.114, 4.526, 4.979, 5.476, 6.024, 6.626,
  7.289, 8.018, 8.82, 9.702, 10.67, 11.74, 12.91, 14.2, 15.62, 17.19, 18.91, 20.8, 22.88, 25.16, 27.68, 30.45, 33.49,
  36.84, 40.53, 44.58, 49.04, 53.94, 59.33, 65.27, 71.8, 78.97, 86.87, 95.56, 105.1, 115.6, 127.2, 139.9, 153.9, 169.3,
  186.2, 204.8, 225.3, 247.9, 272.6, 299.9, 329.9, 362.9, 399.2, 439.1, 483, 531.3, 584.4, 642.9, 707.2, 777.9, 855.7,
  941.2, 1035, 1139, 1253, 1378, 1516, 1667, 1834, 2018, 2219, 2441, 2685, 2954, 3249, 3574, 3932, 4325, 4757, 5233,
  5757, 6332, 6965, 7662, 8428, 9271, 10200, 11220, 12340, 13570, 14930, 16420, 18070, 19870, 21860, 24050, 26450,
  29100, 32010, 35210, 38730, 42600, 46860, 51550, 56700, 62370, 68610, 75470, 83010, 91320, 100400, 110500, 121500,
  133700, 147100, 161800, 177900, 195700, 215300, 236900, 260500, 286600, 315200, 346800, 381400, 419600, 461600,
  507700, 558500, 614300];

const ORIGIN = `TIMESTAMPTZ '2000-01-01 00:00:00+00'`;
const STEP: Record<number, string> = { 60: 'make_interval(mins => 1)', 3600: 'make_interval(hours => 1)', 86400: 'make_interval(days => 1)' };

/** One rollup grain: resolution and whether rows are per task or for all tasks together (task = ''). */
export interface Grain {
  readonly resolutionS: 60 | 3600 | 86400;
  readonly perTask: boolean;
}

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

/** Per-row timings (ms) and SLO verdicts of the records in `source` (the same rules as version 1). */
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

/** Records are grouped once at the finest grain (per task when any grain is); every grain sums those groups. */
function baseOf(grains: readonly Grain[]): { resolutionS: number; perTask: boolean } {
  if (grains.length === 0) throw new Error('at least one grain is required');
  return { resolutionS: Math.min(...grains.map((g) => g.resolutionS)), perTask: grains.some((g) => g.perTask) };
}

function grainSelect(g: Grain, base: { resolutionS: number }, cols: string, sums: string, from: string): string {
  const start = g.resolutionS === base.resolutionS ? 't0' : `date_bin(${STEP[g.resolutionS]}, t0, ${ORIGIN})`;
  return `SELECT ${g.resolutionS} AS resolution_s, ${start} AS bucket_start, ${g.perTask ? 'task' : `''`} AS task, ${cols}${sums}
    FROM ${from} GROUP BY 1, 2, 3${cols === '' ? '' : ', 4, 5'}`;
}

/** Upsert of the count rollups (request_rollups) of the records in `source`, at the given grains. */
export function countRollupSql(source: string, grains: readonly Grain[]): string {
  const base = baseOf(grains);
  const sums = COUNTS.map(([c]) => `sum(${c})`).join(', ');
  return `
    WITH ${derived(source)},
    b AS (
      SELECT date_bin(${STEP[base.resolutionS]}, arrival, ${ORIGIN}) AS t0, ${base.perTask ? 'task' : `'' AS task`},
        ${COUNTS.map(([c, e]) => `${e} AS ${c}`).join(', ')}
      FROM m GROUP BY 1, 2
    ),
    r AS (${grains.map((g) => grainSelect(g, base, '', sums, 'b')).join('\n      UNION ALL ')})
    INSERT INTO request_rollups AS x (resolution_s, bucket_start, task, ${NAMES})
    SELECT * FROM r ORDER BY 1, 2, 3
    ON CONFLICT (resolution_s, bucket_start, task) DO UPDATE SET
      ${COUNTS.map(([c]) => `${c} = x.${c} + EXCLUDED.${c}`).join(', ')}`;
}

/** Upsert of the latency bucket counts (request_latency_rollups) of the completed records in `source`. */
export function latencyRollupSql(source: string, grains: readonly Grain[]): string {
  const base = baseOf(grains);
  return `
    WITH ${derived(source)},
    b AS (
      SELECT date_bin(${STEP[base.resolutionS]}, m.arrival, ${ORIGIN}) AS t0, ${base.perTask ? 'm.task' : `''::text AS task`}, v.metric,
        width_bucket(v.value, ARRAY[${HIST_BOUNDS_MS.join(', ')}]::float8[])::smallint AS bucket, count(*) AS n
      FROM m CROSS JOIN LATERAL (VALUES (0::smallint, m.ttft), (1::smallint, m.tpot), (2::smallint, m.latency)) AS v(metric, value)
      WHERE m.status = 'completed' AND v.value IS NOT NULL
      GROUP BY 1, 2, 3, 4
    ),
    r AS (${grains.map((g) => grainSelect(g, base, 'metric, bucket, ', 'sum(n)', 'b')).join('\n      UNION ALL ')})
    INSERT INTO request_latency_rollups AS x (resolution_s, bucket_start, task, metric, bucket, count)
    SELECT * FROM r ORDER BY 3, 1, 2, 4, 5
    ON CONFLICT (task, resolution_s, bucket_start, metric, bucket) DO UPDATE SET count = x.count + EXCLUDED.count`;
}

export const COUNT_GRAINS: readonly Grain[] = [60, 3600, 86400].flatMap((resolutionS) =>
  [true, false].map((perTask) => ({ resolutionS: resolutionS as Grain['resolutionS'], perTask })));
export const LATENCY_GRAINS: readonly Grain[] = [
  { resolutionS: 3600, perTask: true }, { resolutionS: 86400, perTask: true },
  { resolutionS: 60, perTask: false }, { resolutionS: 3600, perTask: false }, { resolutionS: 86400, perTask: false },
];

/** What the trigger runs per INSERT statement (rows upserted in key order so writers cannot deadlock). */
export function rollupStatementsV2(source: string): string[] {
  return [countRollupSql(source, COUNT_GRAINS), latencyRollupSql(source, LATENCY_GRAINS)];
}

function triggerFunction(statements: readonly string[]): string {
  return `
    CREATE OR REPLACE FUNCTION inlaid_rollup_request_records() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $fn$
    BEGIN
      ${statements.join(';\n')};
      RETURN NULL;
    END
    $fn$`;
}

/**
 * Backfill of what version 1 did not keep: per-task minute counts, and the new histograms (per-task hours
 * and days grouped by hour, all-task grains grouped by minute, so no statement groups records per task-minute
 * with buckets).
 */
export function backfillStatements(source: string): string[] {
  return [
    countRollupSql(source, [{ resolutionS: 60, perTask: true }]),
    latencyRollupSql(source, LATENCY_GRAINS.filter((g) => g.perTask)),
    latencyRollupSql(source, LATENCY_GRAINS.filter((g) => !g.perTask)),
  ];
}

export class DashboardFineRollups1764500000000 implements MigrationInterface {
  name = 'DashboardFineRollups1764500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "request_latency_rollups" (
        "task" text NOT NULL,
        "resolution_s" integer NOT NULL,
        "bucket_start" timestamptz NOT NULL,
        "metric" smallint NOT NULL,
        "bucket" smallint NOT NULL,
        "count" bigint NOT NULL,
        PRIMARY KEY ("task", "resolution_s", "bucket_start", "metric", "bucket") INCLUDE ("count")
      )`);
    // Writers wait here for the backfill, so no record is counted twice or missed.
    await q.query(`LOCK TABLE "request_records" IN SHARE ROW EXCLUSIVE MODE`);
    await q.query(triggerFunction(rollupStatementsV2('new_records')));
    await q.query(`SET LOCAL work_mem = '256MB'`);
    for (const sql of backfillStatements('request_records')) await q.query(sql);
    await q.query(`DROP TABLE "request_rollup_hist"`);
    await q.query(`ANALYZE "request_rollups"`);
    await q.query(`ANALYZE "request_latency_rollups"`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`LOCK TABLE "request_records" IN SHARE ROW EXCLUSIVE MODE`);
    const [counts, hist] = v1Statements('new_records');
    await q.query(triggerFunction([counts ?? '', hist ?? '']));
    await q.query(`DELETE FROM "request_rollups" WHERE "resolution_s" = 60 AND "task" <> ''`);
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
    await q.query(v1Statements('request_records')[1] ?? '');
    await q.query(`DROP TABLE "request_latency_rollups"`);
  }
}

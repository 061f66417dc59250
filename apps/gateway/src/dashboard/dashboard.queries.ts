/**
 * The dashboard's SQL (a thin shell over Postgres). Long ranges read the rollups kept by the request_records
 * trigger (range scans on their primary keys (resolution_s, bucket_start, task, ...)); short ranges read the
 * raw records through the arrival index (or (task, arrival) for one task). Both paths return the same
 * shapes and apply the same rules as metrics/slo.ts (raw ranges judge against the current targets, rollups
 * against the targets in force when each record was written).
 */
import { DataSource } from 'typeorm';
import { LATENCY_BOUNDS_MS } from '../metrics/latency-buckets';
import { METRICS, Metric, RollupSums } from './task-stats';
import { QueryPlan, Segment, TimeRange } from './time-range';

export interface HistRow {
  readonly task: string;
  readonly metric: Metric;
  readonly bucket: number;
  readonly count: number;
}

export interface SeriesRow {
  readonly t: Date;
  readonly requests: number;
  readonly errors: number;
  readonly sloEligible: number;
  readonly sloMet: number;
  readonly tokensOut: number;
  readonly ttftSumMs: number;
}

export interface ErrorRow {
  readonly id: string;
  readonly task: string;
  readonly arrival: Date;
  readonly status: string;
  readonly error: string | null;
}

/** All-tasks rollup rows carry this task name; it is never a real task (model names are non-empty). */
export const ALL_TASKS = '';
const ORIGIN = `TIMESTAMPTZ '2000-01-01 00:00:00+00'`;

/** `(resolution_s = $i AND bucket_start >= $i+1 AND bucket_start < $i+2) OR ...`, params appended to `params`. */
export function segmentsWhere(segments: readonly Segment[], params: unknown[]): string {
  if (segments.length === 0) throw new Error('at least one segment is required');
  const parts = segments.map((s) => {
    params.push(s.resolutionS, s.from, s.to);
    const n = params.length;
    return `(resolution_s = $${n - 2} AND bucket_start >= $${n - 1} AND bucket_start < $${n})`;
  });
  return `(${parts.join(' OR ')})`;
}

const ROLLUP_SUMS = `sum(requests)::float8 AS requests, sum(completed)::float8 AS completed, sum(aborted)::float8 AS aborted,
  sum(failed)::float8 AS failed, sum(rejected)::float8 AS rejected, sum(slo_eligible)::float8 AS "sloEligible",
  sum(ttft_met)::float8 AS "ttftMet", sum(tpot_met)::float8 AS "tpotMet", sum(slo_met)::float8 AS "sloMet",
  sum(tokens_in)::float8 AS "tokensIn", sum(tokens_out)::float8 AS "tokensOut",
  sum(ttft_sum_ms)::float8 AS "ttftSumMs", sum(latency_sum_ms)::float8 AS "latencySumMs"`;

/** Raw records in [$1, $2) (optionally of task $3) with their timings (ms) and SLO verdicts. */
function rawRecords(withTask: boolean): string {
  return `
    d AS (
      SELECT r.task, r.arrival, r.status, r.tokens_in, r.tokens_out,
        CASE WHEN r.first_token IS NOT NULL THEN date_part('epoch', r.first_token - r.arrival) * 1000 END AS ttft,
        CASE WHEN r.first_token IS NOT NULL AND r.finish IS NOT NULL AND r.tokens_out > 1
          THEN date_part('epoch', r.finish - r.first_token) * 1000 / (r.tokens_out - 1) END AS tpot,
        CASE WHEN r.finish IS NOT NULL THEN date_part('epoch', r.finish - r.arrival) * 1000 END AS latency,
        coalesce(t.slo_ttft_ms, s.ttft_ms) AS ttft_target, coalesce(t.slo_tpot_ms, s.tpot_ms) AS tpot_target
      FROM request_records r LEFT JOIN tasks t ON t.name = r.task CROSS JOIN slo_defaults s
      WHERE r.arrival >= $1 AND r.arrival < $2 ${withTask ? 'AND r.task = $3' : ''}
    ),
    m AS (
      SELECT d.*, (d.status = 'completed' AND d.ttft IS NOT NULL AND d.ttft <= d.ttft_target) AS ttft_ok,
        (d.status = 'completed' AND (d.tpot IS NULL OR d.tpot <= d.tpot_target)) AS tpot_ok
      FROM d
    )`;
}

const RAW_SUMS = `count(*)::float8 AS requests, count(*) FILTER (WHERE status = 'completed')::float8 AS completed,
  count(*) FILTER (WHERE status = 'aborted')::float8 AS aborted, count(*) FILTER (WHERE status = 'failed')::float8 AS failed,
  count(*) FILTER (WHERE status = 'rejected')::float8 AS rejected, count(*) FILTER (WHERE status <> 'aborted')::float8 AS "sloEligible",
  count(*) FILTER (WHERE ttft_ok)::float8 AS "ttftMet", count(*) FILTER (WHERE tpot_ok)::float8 AS "tpotMet",
  count(*) FILTER (WHERE ttft_ok AND tpot_ok)::float8 AS "sloMet", coalesce(sum(tokens_in), 0)::float8 AS "tokensIn",
  coalesce(sum(tokens_out), 0)::float8 AS "tokensOut",
  coalesce(sum(ttft) FILTER (WHERE status = 'completed'), 0)::float8 AS "ttftSumMs",
  coalesce(sum(latency) FILTER (WHERE status = 'completed'), 0)::float8 AS "latencySumMs"`;

type RawHist = { task: string; metric: number; bucket: number; count: number };

function toHistRows(rows: RawHist[]): HistRow[] {
  return rows.map((r) => ({ ...r, metric: METRICS[r.metric] ?? 'latency' }));
}

export class DashboardQueries {
  constructor(private readonly db: DataSource) {}

  /** Per-task sums (optionally one task). */
  async taskSums(plan: QueryPlan, task?: string): Promise<RollupSums[]> {
    if (plan.kind === 'raw') {
      return this.db.query(`WITH ${rawRecords(task !== undefined)} SELECT task, ${RAW_SUMS} FROM m GROUP BY task`, this.rawParams(plan.range, task));
    }
    const params: unknown[] = [];
    const where = segmentsWhere(plan.segments, params) + this.taskFilter(task, params);
    return this.db.query(`SELECT task, ${ROLLUP_SUMS} FROM request_rollups WHERE ${where} GROUP BY task`, params);
  }

  /** Per-task, per-metric latency bucket counts of completed requests. */
  async taskHistograms(plan: QueryPlan, task?: string): Promise<HistRow[]> {
    if (plan.kind === 'raw') {
      const params = [...this.rawParams(plan.range, task), LATENCY_BOUNDS_MS];
      const n = params.length;
      return toHistRows(await this.db.query(
        `WITH ${rawRecords(task !== undefined)}
         SELECT m.task, v.metric, width_bucket(v.value, $${n}::float8[]) AS bucket, count(*)::float8 AS count
         FROM m CROSS JOIN LATERAL (VALUES (0, m.ttft), (1, m.tpot), (2, m.latency)) AS v(metric, value)
         WHERE m.status = 'completed' AND v.value IS NOT NULL GROUP BY 1, 2, 3`,
        params,
      ));
    }
    const params: unknown[] = [];
    const where = segmentsWhere(plan.segments, params) + this.taskFilter(task, params);
    return toHistRows(await this.db.query(
      `SELECT task, metric, bucket, sum(count)::float8 AS count FROM request_rollup_hist WHERE ${where} GROUP BY task, metric, bucket`,
      params,
    ));
  }

  /**
   * Chart points per step. All tasks: the all-tasks rollup at `resolutionS`. One task: its hourly/daily
   * rollup rows, or its raw records for sub-hour steps.
   */
  async series(range: TimeRange, stepS: number, resolutionS: number, task?: string): Promise<SeriesRow[]> {
    if (task !== undefined && resolutionS < 3600) {
      return this.db.query(
        `WITH ${rawRecords(true)}
         SELECT date_bin(make_interval(secs => $4), arrival, ${ORIGIN}) AS t, count(*)::float8 AS requests,
           count(*) FILTER (WHERE status IN ('failed', 'rejected'))::float8 AS errors,
           count(*) FILTER (WHERE status <> 'aborted')::float8 AS "sloEligible",
           count(*) FILTER (WHERE ttft_ok AND tpot_ok)::float8 AS "sloMet", coalesce(sum(tokens_out), 0)::float8 AS "tokensOut",
           coalesce(sum(ttft) FILTER (WHERE status = 'completed'), 0)::float8 AS "ttftSumMs"
         FROM m GROUP BY 1 ORDER BY 1`,
        [range.from, range.to, task, stepS],
      );
    }
    return this.db.query(
      `SELECT date_bin(make_interval(secs => $1), bucket_start, ${ORIGIN}) AS t,
         sum(requests)::float8 AS requests, (sum(failed) + sum(rejected))::float8 AS errors,
         sum(slo_eligible)::float8 AS "sloEligible", sum(slo_met)::float8 AS "sloMet",
         sum(tokens_out)::float8 AS "tokensOut", sum(ttft_sum_ms)::float8 AS "ttftSumMs"
       FROM request_rollups
       WHERE resolution_s = $2 AND task = $5
         AND bucket_start >= date_bin(make_interval(secs => $2), $3::timestamptz, ${ORIGIN}) AND bucket_start < $4
       GROUP BY 1 ORDER BY 1`,
      [stepS, resolutionS, range.from, range.to, task ?? ALL_TASKS],
    );
  }

  /** The latest failed or rejected requests in the range (partial index idx_request_records_errors). */
  async recentErrors(range: TimeRange, limit: number): Promise<ErrorRow[]> {
    return this.db.query(
      `SELECT id, task, arrival, status, error FROM request_records
       WHERE status IN ('failed', 'rejected') AND arrival >= $1 AND arrival < $2
       ORDER BY arrival DESC LIMIT $3`,
      [range.from, range.to, limit],
    );
  }

  private rawParams(range: TimeRange, task: string | undefined): unknown[] {
    return task === undefined ? [range.from, range.to] : [range.from, range.to, task];
  }

  /** Restricts rollup rows to one task, or to real tasks (not the all-tasks rows). */
  private taskFilter(task: string | undefined, params: unknown[]): string {
    params.push(task ?? ALL_TASKS);
    return task === undefined ? ` AND task <> $${params.length}` : ` AND task = $${params.length}`;
  }
}

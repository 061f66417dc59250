/**
 * The dashboard's SQL (a thin shell over Postgres). Sums, charts and all-task histograms read the rollups
 * kept by the request_records trigger (request_rollups: primary key (resolution_s, bucket_start, task);
 * request_latency_rollups: primary key (task, resolution_s, bucket_start, ...)), so their cost depends on the
 * number of tasks and segments, not on the number of records. SLO verdicts follow metrics/slo.ts, against
 * the targets in force when each record was written.
 */
import { DataSource } from 'typeorm';
import { HIST_BOUNDS_MS } from './log-buckets';
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

/** Timings (ms) of a record `r`, with exactly the trigger's expressions, so buckets agree. */
const TTFT = `CASE WHEN r.first_token IS NOT NULL THEN date_part('epoch', r.first_token - r.arrival) * 1000 END`;
const TPOT = `CASE WHEN r.first_token IS NOT NULL AND r.finish IS NOT NULL AND r.tokens_out > 1
  THEN date_part('epoch', r.finish - r.first_token) * 1000 / (r.tokens_out - 1) END`;
const LATENCY = `CASE WHEN r.finish IS NOT NULL THEN date_part('epoch', r.finish - r.arrival) * 1000 END`;

type RawHist = { task: string; metric: number; bucket: number; count: number };

function toHistRows(rows: RawHist[]): HistRow[] {
  return rows.map((r) => ({ ...r, metric: METRICS[r.metric] ?? 'latency' }));
}

export class DashboardQueries {
  constructor(private readonly db: DataSource) {}

  /** Per-task sums (optionally one task) from request_rollups (primary key range scans). */
  async taskSums(plan: QueryPlan, task?: string): Promise<RollupSums[]> {
    const params: unknown[] = [];
    const where = segmentsWhere(plan.segments, params) + this.taskFilter(task, params);
    return this.db.query(`SELECT task, ${ROLLUP_SUMS} FROM request_rollups WHERE ${where} GROUP BY task`, params);
  }

  /**
   * Latency bucket counts (HIST_BOUNDS_MS) of completed requests for all tasks together (task ALL_TASKS)
   * and for each of `tasks`. All tasks and hour- or day-precision plans read request_latency_rollups (key: task,
   * resolution, start, ...: index-only range scans); per-task minute-precision plans (at most 3 h) count
   * the tasks' own records in the range (arrival or (task, arrival) index), with the trigger's expressions
   * and bounds.
   */
  async latencyHistograms(plan: QueryPlan, tasks: readonly string[], allTasks = true): Promise<HistRow[]> {
    const fromRollups = [...(allTasks ? [ALL_TASKS] : []), ...(plan.precision !== 'minute' ? tasks : [])];
    const fromRecords = plan.precision === 'minute' ? tasks : [];
    const parts: Array<Promise<RawHist[]>> = [];
    if (fromRollups.length > 0) {
      // One primary-key range per (task, segment): a lateral subquery kept apart by OFFSET 0, so the planner
      // neither turns the segments into a filter over the tasks' rows nor joins against a scan of the table.
      const params: unknown[] = [fromRollups];
      const segments = plan.segments.map((seg) => {
        params.push(seg.resolutionS, seg.from, seg.to);
        const n = params.length;
        return `($${n - 2}::int, $${n - 1}::timestamptz, $${n}::timestamptz)`;
      });
      parts.push(this.db.query(
        `SELECT x.task, x.metric, x.bucket, sum(x.count)::float8 AS count
         FROM unnest($1::text[]) AS t(task) CROSS JOIN (VALUES ${segments.join(', ')}) AS s(resolution_s, f, t)
         CROSS JOIN LATERAL (
           SELECT r.task, r.metric, r.bucket, r.count FROM request_latency_rollups r
           WHERE r.task = t.task AND r.resolution_s = s.resolution_s AND r.bucket_start >= s.f AND r.bucket_start < s.t OFFSET 0
         ) AS x
         GROUP BY 1, 2, 3`,
        params,
      ));
    }
    if (fromRecords.length > 0) {
      parts.push(this.db.query(
        `SELECT r.task, v.metric, width_bucket(v.value, $4::float8[]) AS bucket, count(*)::float8 AS count
         FROM unnest($3::text[]) AS t(task)
         JOIN request_records r ON r.task = t.task AND r.arrival >= $1 AND r.arrival < $2 AND r.status = 'completed'
         CROSS JOIN LATERAL (VALUES (0, ${TTFT}), (1, ${TPOT}), (2, ${LATENCY})) AS v(metric, value)
         WHERE v.value IS NOT NULL
         GROUP BY 1, 2, 3`,
        [plan.range.from, plan.range.to, fromRecords, HIST_BOUNDS_MS],
      ));
    }
    return toHistRows((await Promise.all(parts)).flat());
  }

  /** Chart points per step from the all-tasks or the task's rollup rows at `resolutionS`. */
  async series(range: TimeRange, stepS: number, resolutionS: number, task?: string): Promise<SeriesRow[]> {
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

  /** Restricts rollup rows to one task, or to real tasks (not the all-tasks rows). */
  private taskFilter(task: string | undefined, params: unknown[]): string {
    params.push(task ?? ALL_TASKS);
    return task === undefined ? ` AND task <> $${params.length}` : ` AND task = $${params.length}`;
  }
}

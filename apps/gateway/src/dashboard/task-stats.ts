/**
 * Turns summed rollup rows into the numbers the dashboard shows, per task and overall (pure). Attainment is
 * met / eligible, where eligible excludes requests the client aborted; failed and rejected requests count as
 * misses. Queue depth is the mean number of requests waiting for their first token over the range (Little's
 * law: sum of TTFT / range length), in-flight likewise with end-to-end latency. Percentiles come from
 * log-bucket counts (log-buckets.ts: within 4.8% of the exact nearest-rank value).
 */
import { emptyHist, histQuantile } from './log-buckets';
import type { SloTargets } from '../metrics/slo';

export interface RollupSums {
  readonly task: string;
  readonly requests: number;
  readonly completed: number;
  readonly aborted: number;
  readonly failed: number;
  readonly rejected: number;
  readonly sloEligible: number;
  readonly ttftMet: number;
  readonly tpotMet: number;
  readonly sloMet: number;
  readonly tokensIn: number;
  readonly tokensOut: number;
  readonly ttftSumMs: number;
  readonly latencySumMs: number;
}

export type Metric = 'ttft' | 'tpot' | 'latency';
export const METRICS: readonly Metric[] = ['ttft', 'tpot', 'latency']; // index = rollup `metric` column
export type Histograms = Record<Metric, number[]>;

export interface Percentiles {
  readonly p50: number | null;
  readonly p90: number | null;
  readonly p99: number | null;
}

export interface TaskStats {
  readonly task: string;
  readonly targets: SloTargets;
  readonly requests: number;
  readonly completed: number;
  readonly aborted: number;
  readonly errors: number;
  readonly errorRate: number | null;
  readonly sloAttainment: number | null;
  readonly ttftAttainment: number | null;
  readonly tpotAttainment: number | null;
  readonly requestsPerS: number;
  readonly tokensOutPerS: number;
  readonly tokensIn: number;
  readonly tokensOut: number;
  readonly meanQueueDepth: number;
  readonly meanInFlight: number;
  readonly ttftMs: Percentiles;
  readonly tpotMs: Percentiles;
  readonly latencyMs: Percentiles;
}

export function emptyHistograms(): Histograms {
  return { ttft: emptyHist(), tpot: emptyHist(), latency: emptyHist() };
}

function ratio(a: number, b: number): number | null {
  return b > 0 ? a / b : null;
}

function percentiles(counts: readonly number[]): Percentiles {
  return { p50: histQuantile(counts, 0.5), p90: histQuantile(counts, 0.9), p99: histQuantile(counts, 0.99) };
}

export function toTaskStats(sums: RollupSums, hist: Histograms, targets: SloTargets, rangeMs: number): TaskStats {
  const errors = sums.failed + sums.rejected;
  return {
    task: sums.task,
    targets,
    requests: sums.requests,
    completed: sums.completed,
    aborted: sums.aborted,
    errors,
    errorRate: ratio(errors, sums.requests),
    sloAttainment: ratio(sums.sloMet, sums.sloEligible),
    ttftAttainment: ratio(sums.ttftMet, sums.sloEligible),
    tpotAttainment: ratio(sums.tpotMet, sums.sloEligible),
    requestsPerS: sums.requests / (rangeMs / 1000),
    tokensOutPerS: sums.tokensOut / (rangeMs / 1000),
    tokensIn: sums.tokensIn,
    tokensOut: sums.tokensOut,
    meanQueueDepth: sums.ttftSumMs / rangeMs,
    meanInFlight: sums.latencySumMs / rangeMs,
    ttftMs: percentiles(hist.ttft),
    tpotMs: percentiles(hist.tpot),
    latencyMs: percentiles(hist.latency),
  };
}

const NUMERIC_KEYS = ['requests', 'completed', 'aborted', 'failed', 'rejected', 'sloEligible', 'ttftMet', 'tpotMet',
  'sloMet', 'tokensIn', 'tokensOut', 'ttftSumMs', 'latencySumMs'] as const;

/** Sums rows of several tasks into one row named `task`. */
export function sumRows(task: string, rows: readonly RollupSums[]): RollupSums {
  const out: Record<string, number | string> = { task };
  for (const k of NUMERIC_KEYS) out[k] = rows.reduce((a, r) => a + r[k], 0);
  return out as unknown as RollupSums;
}

/** Histogram rows (task, metric, bucket, count) → one Histograms per task. */
export function histogramsByTask(rows: Iterable<{ task: string; metric: Metric; bucket: number; count: number }>): Map<string, Histograms> {
  const byTask = new Map<string, Histograms>();
  for (const h of rows) {
    let entry = byTask.get(h.task);
    if (entry === undefined) byTask.set(h.task, (entry = emptyHistograms()));
    entry[h.metric][h.bucket] = (entry[h.metric][h.bucket] ?? 0) + h.count;
  }
  return byTask;
}

/**
 * Worst first: lowest SLO attainment, then highest error rate, then most requests; tasks with no eligible
 * request (nothing to judge) go last.
 */
export function worstFirst(a: TaskStats, b: TaskStats): number {
  const sa = a.sloAttainment ?? Number.POSITIVE_INFINITY;
  const sb = b.sloAttainment ?? Number.POSITIVE_INFINITY;
  if (sa !== sb) return sa - sb;
  const ea = a.errorRate ?? 0;
  const eb = b.errorRate ?? 0;
  if (ea !== eb) return eb - ea;
  if (a.requests !== b.requests) return b.requests - a.requests;
  return a.task.localeCompare(b.task);
}

/** Aggregates per-request outcomes of a simulation into the report fields the issue asks for. */

export interface RequestResult {
  readonly task: string;
  readonly arrivalS: number;
  readonly promptTokens?: number;
  readonly outputTokens: number;
  /** When the scheduler first admitted it (undefined: never admitted). */
  readonly admitS?: number;
  /** undefined when the request never finished (aborted or still running at the horizon). */
  readonly finishS?: number;
  readonly ttftS?: number;
  readonly tpotS?: number;
  readonly metSlo: boolean;
  /** Times the request was preempted (KV dropped, recomputed later); 0 when never admitted. */
  readonly preemptions?: number;
  /** Refused on arrival: the prompt does not fit the worker's context (SimOptions.maxModelLen). */
  readonly rejected?: boolean;
}

export interface SimReport {
  readonly requests: number;
  readonly finished: number;
  readonly aborted: number;
  /** Refused on arrival (prompt over the context limit); they count as SLO misses, like the real stack's 400s. */
  readonly rejected: number;
  readonly unfinished: number;
  readonly slo_attainment: number;
  readonly throughput_tok_s: number;
  readonly throughput_req_s: number;
  readonly mean_latency_s: number;
  readonly p50_latency_s: number;
  readonly p90_latency_s: number;
  readonly p99_latency_s: number;
  readonly mean_ttft_s: number;
  readonly mean_tpot_s: number;
  /** Mean over tasks of (last completion - first arrival). */
  readonly jct_s: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (p / 100) * (sorted.length - 1);
  const i = Math.floor(pos);
  return i + 1 < sorted.length ? sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]) : sorted[i];
}

const mean = (xs: readonly number[]): number => (xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

export function summarize(results: readonly RequestResult[], aborted: number, endS: number): SimReport {
  const done = results.filter((r) => r.finishS !== undefined);
  const latency = done.map((r) => (r.finishS as number) - r.arrivalS).sort((a, b) => a - b);
  const start = results.reduce((a, r) => Math.min(a, r.arrivalS), results.length > 0 ? Infinity : 0);
  const span = Math.max(endS - start, 1e-9);
  const tasks = new Map<string, { first: number; last: number }>();
  for (const r of results) {
    const t = tasks.get(r.task) ?? { first: r.arrivalS, last: r.arrivalS };
    t.first = Math.min(t.first, r.arrivalS);
    t.last = Math.max(t.last, r.finishS ?? (r.rejected === true ? r.arrivalS : endS));
    tasks.set(r.task, t);
  }
  const rejected = results.filter((r) => r.rejected === true).length;
  return {
    requests: results.length,
    finished: done.length,
    aborted,
    rejected,
    unfinished: results.length - done.length - aborted - rejected,
    slo_attainment: results.length === 0 ? 0 : results.filter((r) => r.metSlo).length / results.length,
    throughput_tok_s: done.reduce((a, r) => a + r.outputTokens, 0) / span,
    throughput_req_s: done.length / span,
    mean_latency_s: mean(latency),
    p50_latency_s: percentile(latency, 50),
    p90_latency_s: percentile(latency, 90),
    p99_latency_s: percentile(latency, 99),
    mean_ttft_s: mean(done.map((r) => r.ttftS as number)),
    mean_tpot_s: mean(done.map((r) => r.tpotS as number)),
    jct_s: mean([...tasks.values()].map((t) => t.last - t.first)),
  };
}

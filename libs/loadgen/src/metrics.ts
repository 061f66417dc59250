/**
 * Per-request timings as the client saw them and their summary (pure): TTFT = first streamed token
 * minus send time, TPOT = (last token - first token) / (tokens - 1), latency = end - send. A request
 * meets its SLO when it succeeded and both TTFT and TPOT are within bounds.
 */

export interface RequestTiming {
  readonly task: string;
  /** Scheduled send time, seconds from the start of the replay. */
  readonly sentS: number;
  /** undefined when no token arrived. */
  readonly firstTokenS?: number;
  readonly lastTokenS?: number;
  readonly endS: number;
  readonly outputTokens: number;
  readonly ok: boolean;
  readonly error?: string;
}

export interface Slo {
  readonly ttftS: number;
  readonly tpotS: number;
}

export interface Distribution {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
}

export interface LoadReport {
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly slo: Slo;
  readonly slo_attainment: number;
  readonly duration_s: number;
  readonly throughput_tok_s: number;
  readonly throughput_req_s: number;
  readonly ttft_s: Distribution;
  readonly tpot_s: Distribution;
  readonly latency_s: Distribution;
}

export function ttftOf(t: RequestTiming): number | undefined {
  return t.firstTokenS === undefined ? undefined : t.firstTokenS - t.sentS;
}

export function tpotOf(t: RequestTiming): number | undefined {
  if (t.firstTokenS === undefined || t.lastTokenS === undefined) return undefined;
  return t.outputTokens > 1 ? (t.lastTokenS - t.firstTokenS) / (t.outputTokens - 1) : 0;
}

export function meetsSlo(t: RequestTiming, slo: Slo): boolean {
  const ttft = ttftOf(t);
  const tpot = tpotOf(t);
  return t.ok && ttft !== undefined && tpot !== undefined && ttft <= slo.ttftS && tpot <= slo.tpotS;
}

/** Linear-interpolated percentile of unsorted values (NaN when empty). */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (p / 100) * (s.length - 1);
  const i = Math.floor(pos);
  return i + 1 < s.length ? s[i] + (pos - i) * (s[i + 1] - s[i]) : s[i];
}

export function distribution(xs: readonly number[]): Distribution {
  const mean = xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean, p50: percentile(xs, 50), p90: percentile(xs, 90), p99: percentile(xs, 99) };
}

export function summarize(timings: readonly RequestTiming[], slo: Slo): LoadReport {
  const ok = timings.filter((t) => t.ok);
  const start = Math.min(...timings.map((t) => t.sentS));
  const end = Math.max(...timings.map((t) => t.endS));
  const span = timings.length > 0 ? Math.max(end - start, 1e-9) : 1;
  const defined = (xs: (number | undefined)[]): number[] => xs.filter((x): x is number => x !== undefined);
  return {
    requests: timings.length,
    succeeded: ok.length,
    failed: timings.length - ok.length,
    slo,
    slo_attainment: timings.length === 0 ? 0 : timings.filter((t) => meetsSlo(t, slo)).length / timings.length,
    duration_s: timings.length > 0 ? span : 0,
    throughput_tok_s: ok.reduce((a, t) => a + t.outputTokens, 0) / span,
    throughput_req_s: ok.length / span,
    ttft_s: distribution(defined(ok.map(ttftOf))),
    tpot_s: distribution(defined(ok.map(tpotOf))),
    latency_s: distribution(ok.map((t) => t.endS - t.sentS)),
  };
}

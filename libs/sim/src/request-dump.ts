/**
 * One JSON line per simulated request (`npm run sim -- --requests-out FILE`), in trace order, so that a run can be
 * compared request by request with the load client's timings of the real stack (bench/sim/real_vs_sim_requests.mjs).
 * Times are seconds on the trace's clock; queue_s is the wait from arrival to the first admission.
 */
import { RequestResult } from './metrics';

export interface RequestLine {
  readonly i: number;
  readonly task: string;
  readonly arrival_s: number;
  readonly prompt_tokens: number | null;
  readonly output_tokens: number;
  readonly rejected: boolean;
  readonly queue_s: number | null;
  readonly ttft_s: number | null;
  readonly tpot_s: number | null;
  readonly latency_s: number | null;
  readonly met_slo: boolean;
  readonly preemptions: number;
}

export function requestLine(r: RequestResult, i: number): RequestLine {
  return {
    i,
    task: r.task,
    arrival_s: r.arrivalS,
    prompt_tokens: r.promptTokens ?? null,
    output_tokens: r.outputTokens,
    rejected: r.rejected === true,
    queue_s: r.admitS === undefined ? null : r.admitS - r.arrivalS,
    ttft_s: r.ttftS ?? null,
    tpot_s: r.tpotS ?? null,
    latency_s: r.finishS === undefined ? null : r.finishS - r.arrivalS,
    met_slo: r.metSlo,
    preemptions: r.preemptions ?? 0,
  };
}

export function requestLines(results: readonly RequestResult[]): string {
  return results.map((r, i) => JSON.stringify(requestLine(r, i)) + '\n').join('');
}

/**
 * The worker's context limit as the simulator applies it (the worker's Prepare and engine, max_model_len):
 * a prompt of max_model_len tokens or more is refused before it reaches the scheduler (HTTP 400, no tokens),
 * and a request stops when prompt + output reaches max_model_len (finish reason "length"). Without a limit
 * the simulator would serve over-long prompts that the real stack rejects, and generate tokens past the
 * context that the real worker never produces.
 */
import { TraceRecord } from '@inlaid/workload';

export type ContextFit = { readonly rejected: true } | { readonly rejected: false; readonly outputTokens: number };

/** What the worker serves of `rec` under `maxModelLen` (undefined: no limit). */
export function fitContext(rec: TraceRecord, maxModelLen: number | undefined): ContextFit {
  if (maxModelLen === undefined) return { rejected: false, outputTokens: rec.output_tokens };
  if (rec.prompt_tokens >= maxModelLen) return { rejected: true };
  return { rejected: false, outputTokens: Math.min(rec.output_tokens, maxModelLen - rec.prompt_tokens) };
}

export function checkMaxModelLen(v: number | undefined): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= 2)) throw new Error(`maxModelLen must be an integer >= 2, got ${v}`);
}

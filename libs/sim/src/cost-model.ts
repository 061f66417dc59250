/**
 * Step-time cost model of one worker and its capacity (format and parser: @inlaid/scheduling's cost-model.ts,
 * shared with the gateway's INLAID_COST_MODEL), and the simulator's step time:
 *   step_s = base_s + prefill_tokens * prefill_token_s + decode_rows * decode_row_s
 *          + distinct_adapters * adapter_s + resident_kv_tokens * kv_token_s
 *          + (prefill_tokens > 0 ? prefill_step_s : 0)
 * The constants must come from measurements of the real worker (see calibration/README.md).
 */
import { CostModel } from '@inlaid/scheduling';

export { parseCostModel, stepCostOf } from '@inlaid/scheduling';
export type { CostModel } from '@inlaid/scheduling';

export interface StepShape {
  readonly prefillTokens: number;
  readonly decodeRows: number;
  readonly adapters: number;
  readonly kvTokens: number;
}

export function stepTime(m: CostModel, s: StepShape): number {
  return (
    m.base_s +
    s.prefillTokens * m.prefill_token_s +
    (s.prefillTokens > 0 ? (m.prefill_step_s ?? 0) : 0) +
    s.decodeRows * m.decode_row_s +
    s.adapters * m.adapter_s +
    s.kvTokens * m.kv_token_s
  );
}

/**
 * Where a simulated worker's time went: cost-model.ts's step time split into its terms and summed over the steps
 * (the fixed cost of a step, prefill, decode rows, distinct adapters, resident KV). Policies serve the same tokens
 * and, without preemption, the same prefill and KV work; what a policy changes is mostly the number of steps and
 * the adapters per step, so these sums show where one loses throughput (bench/sim/loss-analysis.js).
 */
import { CostModel, StepShape } from './cost-model';

export interface StepTimeTerms {
  /** base_s per step. */
  baseS: number;
  /** Prefill tokens and the fixed cost of steps that prefill. */
  prefillS: number;
  decodeRowsS: number;
  adaptersS: number;
  kvS: number;
}

export const zeroTerms = (): StepTimeTerms => ({ baseS: 0, prefillS: 0, decodeRowsS: 0, adaptersS: 0, kvS: 0 });

/** Adds the terms of one step of shape `s` to `acc` (they sum to cost-model.ts's stepTime). */
export function addStepTerms(acc: StepTimeTerms, m: CostModel, s: StepShape): void {
  acc.baseS += m.base_s;
  acc.prefillS += s.prefillTokens * m.prefill_token_s + (s.prefillTokens > 0 ? (m.prefill_step_s ?? 0) : 0);
  acc.decodeRowsS += s.decodeRows * m.decode_row_s;
  acc.adaptersS += s.adapters * m.adapter_s;
  acc.kvS += s.kvTokens * m.kv_token_s;
}

export const termsTotal = (t: StepTimeTerms): number => t.baseS + t.prefillS + t.decodeRowsS + t.adaptersS + t.kvS;

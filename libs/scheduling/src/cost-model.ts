/**
 * A worker's calibrated step-time cost model and capacity, as read from a calibration JSON file (the format
 * of libs/sim/calibration/*.json), and its mapping onto the scheduler's StepCost. Pure: parses an already
 * decoded value; the simulator and the gateway read the file themselves.
 *   step_s = base_s + prefill_tokens * prefill_token_s + decode_rows * decode_row_s
 *          + distinct_adapters * adapter_s + resident_kv_tokens * kv_token_s
 *          + (prefill_tokens > 0 ? prefill_step_s : 0)
 * (`prefill_step_s`, optional, default 0: a fixed cost of any step that prefills, e.g. eager prefill next to
 * decode steps replayed from CUDA graphs.) The constants must come from measurements of the real worker.
 */
import { StepCost } from './types';

export interface CostModel {
  readonly label: string;
  /** Where each number came from; free text, copied into reports. */
  readonly source: string;
  /** True while the numbers are not measurements of our own worker. */
  readonly placeholder: boolean;
  readonly base_s: number;
  readonly prefill_token_s: number;
  readonly decode_row_s: number;
  readonly adapter_s: number;
  readonly kv_token_s: number;
  /** Fixed cost of a step that prefills anything (optional in the file; 0 when absent). */
  readonly prefill_step_s?: number;
  readonly kv_blocks: number;
  readonly block_size: number;
  readonly max_batch_rows: number;
  readonly max_prefill_tokens: number;
  /** SLO suggested for this hardware (used when the caller gives none). */
  readonly suggested_slo: { readonly ttft_s: number; readonly tpot_s: number };
}

/** The step-cost part of the model, as the scheduler's worker state carries it. */
export function stepCostOf(m: CostModel): StepCost {
  return { baseS: m.base_s, decodeRowS: m.decode_row_s, adapterS: m.adapter_s, kvTokenS: m.kv_token_s, prefillTokenS: m.prefill_token_s, prefillStepS: m.prefill_step_s ?? 0 };
}

const NUMBERS = ['base_s', 'prefill_token_s', 'decode_row_s', 'adapter_s', 'kv_token_s'] as const;
const INTEGERS = ['kv_blocks', 'block_size', 'max_batch_rows', 'max_prefill_tokens'] as const;

/** Validates a parsed calibration object (unknown keys such as "_comment" are ignored). */
export function parseCostModel(v: unknown, where = 'cost model'): CostModel {
  if (typeof v !== 'object' || v === null) throw new Error(`${where}: expected an object`);
  const o = v as Record<string, unknown>;
  for (const k of NUMBERS) {
    if (typeof o[k] !== 'number' || !((o[k] as number) >= 0)) throw new Error(`${where}: "${k}" must be a number >= 0`);
  }
  for (const k of INTEGERS) {
    if (!Number.isInteger(o[k]) || (o[k] as number) < 1) throw new Error(`${where}: "${k}" must be a positive integer`);
  }
  if (o.prefill_step_s !== undefined && !(typeof o.prefill_step_s === 'number' && o.prefill_step_s >= 0)) {
    throw new Error(`${where}: "prefill_step_s" must be a number >= 0 when given`);
  }
  const slo = o.suggested_slo as Record<string, unknown> | undefined;
  if (typeof slo !== 'object' || slo === null || !((slo.ttft_s as number) > 0) || !((slo.tpot_s as number) > 0)) {
    throw new Error(`${where}: "suggested_slo" needs positive ttft_s and tpot_s`);
  }
  if (typeof o.label !== 'string' || typeof o.source !== 'string' || typeof o.placeholder !== 'boolean') {
    throw new Error(`${where}: "label", "source" (strings) and "placeholder" (boolean) are required`);
  }
  return v as CostModel;
}

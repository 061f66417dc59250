/**
 * The online fit (cost-fit.ts) as a calibration file (the format of libs/sim/calibration/*.json, read by
 * parseCostModel), with its error and provenance, and as the scheduler's StepCost. Pure.
 */
import type { CostModel } from './cost-model';
import type { CostFit, CostTerms } from './cost-fit';
import type { ServedStep } from './cost-steps';
import type { StepCost } from './types';

export interface FitCapacity {
  readonly kv_blocks: number;
  readonly block_size: number;
  readonly max_batch_rows: number;
  readonly max_prefill_tokens: number;
}

export interface FitProvenance {
  readonly label: string;
  /** ISO time the file was written. */
  readonly dateUtc: string;
  /** The worker the steps were served by (address, id). */
  readonly worker: string;
  /** Free text: policy, machine, command. */
  readonly context: string;
  /** Wall-clock seconds between the window's first and last step. */
  readonly spanS: number;
}

export type FittedCostModelFile = CostModel & {
  readonly _comment: string;
  readonly prefill_step_s: number;
  readonly fit_error: CostFit['error'];
  readonly window_mean: CostFit['mean'];
  readonly measured: { readonly date_utc: string; readonly worker: string; readonly context: string; readonly span_s: number; readonly method: string; readonly terms_fitted: readonly string[] };
  readonly points?: readonly ServedStep[];
};

export function stepCostOfTerms(t: CostTerms): StepCost {
  return { baseS: t.base_s, decodeRowS: t.decode_row_s, adapterS: t.adapter_s, kvTokenS: t.kv_token_s, prefillTokenS: t.prefill_token_s, prefillStepS: t.prefill_step_s };
}

const METHOD =
  'Served steps as the gateway saw them (apps/gateway: token deltas grouped into worker steps, wall time = time between the first deltas of consecutive steps, gRPC/engine loop/gateway/contention included; libs/scheduling cost-steps.ts), non-negative least squares of the 6 step-cost terms over the window (cost-fit.ts); fit_error is held out (every 5th step predicted by a fit without them).';

export function costModelFileOf(fit: CostFit, cap: FitCapacity, slo: { ttft_s: number; tpot_s: number }, p: FitProvenance, points?: readonly ServedStep[]): FittedCostModelFile {
  const e = fit.error;
  const pct = (v: number): string => `${(100 * v).toFixed(1)}%`;
  return {
    _comment: `MEASURED online by the gateway (${p.context}), ${p.dateUtc}, worker ${p.worker}: ${e.n_steps} served steps over ${p.spanS.toFixed(0)} s.`,
    label: p.label,
    placeholder: false,
    source: `${METHOD} Held-out median relative error ${pct(e.median_rel)}, p90 ${pct(e.p90_rel)}, predicted/served time ${e.sum_ratio.toFixed(3)}.`,
    ...fit.terms,
    ...cap,
    suggested_slo: slo,
    fit_error: e,
    window_mean: fit.mean,
    measured: { date_utc: p.dateUtc, worker: p.worker, context: p.context, span_s: p.spanS, method: METHOD, terms_fitted: fit.fitted },
    ...(points === undefined ? {} : { points }),
  };
}

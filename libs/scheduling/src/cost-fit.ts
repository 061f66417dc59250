/**
 * Online fit of the step-cost model from served steps (cost-steps.ts): non-negative least squares over a
 * sliding window of the most recent steps, refitted every `refitEvery` steps. Pure.
 *   step_s = base_s + prefill_tokens * prefill_token_s + decode_rows * decode_row_s
 *          + distinct_adapters * adapter_s + kv_tokens * kv_token_s + (prefill_tokens > 0 ? prefill_step_s : 0)
 * The loss is the plain squared error in seconds, so the fitted model predicts the mean wall time of a
 * step of a given shape, and the sum of predicted step times over the window matches the time served
 * (the simulator's throughput depends on that sum). `trimRel` optionally drops steps whose time is more
 * than (1 + trimRel) x the first fit's prediction (stalls), then refits.
 * The error reported is held out: every 5th step of the window is predicted by a fit without them.
 * `terms` limits the fit to some of the six terms (the others are 0): a term the served steps cannot tell
 * apart from the others (distinct adapters move with rows and prefills in real traffic) can take time
 * that belongs to them and then extrapolates badly to other policies' batches.
 */
import { nnlsNormal } from './cost-nnls';
import type { ServedStep } from './cost-steps';

/** The fitted constants, named as in the calibration JSON files. */
export interface CostTerms {
  readonly base_s: number;
  readonly prefill_token_s: number;
  readonly decode_row_s: number;
  readonly adapter_s: number;
  readonly kv_token_s: number;
  readonly prefill_step_s: number;
}

export interface FitError {
  /** Held-out relative error |pred - obs| / obs: median and 90th percentile. */
  readonly median_rel: number;
  readonly p90_rel: number;
  /** Held-out root-mean-square error (seconds). */
  readonly rmse_s: number;
  /** Sum of predicted / sum of observed step times over the held-out steps (1 = total time right). */
  readonly sum_ratio: number;
  readonly n_steps: number;
  readonly n_heldout: number;
  /** Steps dropped as stalls (trimRel). */
  readonly n_trimmed: number;
}

export interface CostFit {
  readonly terms: CostTerms;
  readonly error: FitError;
  /** Gateway clock of the window's first and last step. */
  readonly fromS: number;
  readonly toS: number;
  /** Mean shape of the window's steps (what the fit has seen). */
  /** The terms fitted (the others are 0). */
  readonly fitted: readonly CostTermName[];
  readonly mean: { readonly wallS: number; readonly prefillTokens: number; readonly decodeRows: number; readonly adapters: number; readonly kvTokens: number };
}

export interface OnlineCostFitOptions {
  /** Steps kept (default 2000). */
  readonly window: number;
  /** Steps needed before a fit is given (default 200). */
  readonly minSteps: number;
  /** Refit after this many new steps (default 50). */
  readonly refitEvery: number;
  /** Drop steps slower than (1 + trimRel) x the first fit (default: keep all). */
  readonly trimRel: number;
  /** Terms fitted (default all); the others stay 0. */
  readonly terms: readonly CostTermName[];
}

export const COST_TERM_NAMES = ['base_s', 'prefill_token_s', 'decode_row_s', 'adapter_s', 'kv_token_s', 'prefill_step_s'] as const;
export type CostTermName = (typeof COST_TERM_NAMES)[number];

export const DEFAULT_ONLINE_FIT: OnlineCostFitOptions = { window: 2000, minSteps: 200, refitEvery: 50, trimRel: Number.POSITIVE_INFINITY, terms: COST_TERM_NAMES };

const K = 6;

export function features(s: Omit<ServedStep, 'wallS' | 'atS'>): number[] {
  return [1, s.prefillTokens, s.decodeRows, s.adapters, s.kvTokens, s.prefillTokens > 0 ? 1 : 0];
}

export function termsOf(x: readonly number[]): CostTerms {
  return { base_s: x[0], prefill_token_s: x[1], decode_row_s: x[2], adapter_s: x[3], kv_token_s: x[4], prefill_step_s: x[5] };
}

export function predictStep(t: CostTerms, s: Omit<ServedStep, 'wallS' | 'atS'>): number {
  return t.base_s + s.prefillTokens * t.prefill_token_s + s.decodeRows * t.decode_row_s + s.adapters * t.adapter_s + s.kvTokens * t.kv_token_s + (s.prefillTokens > 0 ? t.prefill_step_s : 0);
}

/** NNLS fit of `steps` (all of them, unweighted), of the terms named in `terms` (the rest are 0). */
export function fitSteps(steps: readonly ServedStep[], terms: readonly CostTermName[] = COST_TERM_NAMES): CostTerms {
  const mask = COST_TERM_NAMES.map((t) => (terms.includes(t) ? 1 : 0));
  const g = Array.from({ length: K }, () => new Array<number>(K).fill(0));
  const b = new Array<number>(K).fill(0);
  for (const s of steps) {
    const f = features(s).map((v, i) => v * mask[i]);
    for (let i = 0; i < K; i++) {
      b[i] += f[i] * s.wallS;
      for (let j = 0; j < K; j++) g[i][j] += f[i] * f[j];
    }
  }
  return termsOf(nnlsNormal(g, b));
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Fit with optional stall trimming; returns the terms and the steps kept. */
export function robustFit(steps: readonly ServedStep[], trimRel: number, names: readonly CostTermName[] = COST_TERM_NAMES): { terms: CostTerms; kept: ServedStep[] } {
  const first = fitSteps(steps, names);
  if (!Number.isFinite(trimRel)) return { terms: first, kept: [...steps] };
  const kept = steps.filter((s) => s.wallS <= (1 + trimRel) * predictStep(first, s));
  return { terms: kept.length >= K ? fitSteps(kept, names) : first, kept };
}

/** Held-out error: fits without every 5th step, predicts those. */
export function heldOutError(steps: readonly ServedStep[], trimRel: number, names: readonly CostTermName[] = COST_TERM_NAMES): FitError {
  const train = steps.filter((_, i) => i % 5 !== 4);
  const test = steps.filter((_, i) => i % 5 === 4);
  const { terms, kept } = robustFit(train, trimRel, names);
  const rel = test.map((s) => Math.abs(predictStep(terms, s) - s.wallS) / s.wallS).sort((a, b) => a - b);
  let se = 0;
  let pred = 0;
  let obs = 0;
  for (const s of test) {
    const p = predictStep(terms, s);
    se += (p - s.wallS) ** 2;
    pred += p;
    obs += s.wallS;
  }
  return {
    median_rel: quantile(rel, 0.5),
    p90_rel: quantile(rel, 0.9),
    rmse_s: test.length > 0 ? Math.sqrt(se / test.length) : Number.NaN,
    sum_ratio: obs > 0 ? pred / obs : Number.NaN,
    n_steps: steps.length,
    n_heldout: test.length,
    n_trimmed: train.length - kept.length,
  };
}

export class OnlineCostFit {
  private readonly ring: ServedStep[] = [];
  private head = 0;
  private sinceFit = 0;
  private total = 0;
  private terms: CostTerms | undefined;
  readonly options: OnlineCostFitOptions;

  constructor(opts: Partial<OnlineCostFitOptions> = {}) {
    this.options = { ...DEFAULT_ONLINE_FIT, ...opts };
    const o = this.options;
    const termsOk = o.terms.length > 0 && o.terms.every((t) => (COST_TERM_NAMES as readonly string[]).includes(t));
    if (!(termsOk && Number.isInteger(o.window) && o.window >= K && Number.isInteger(o.minSteps) && o.minSteps >= K && o.minSteps <= o.window && Number.isInteger(o.refitEvery) && o.refitEvery >= 1 && o.trimRel > 0)) {
      throw new Error(`online cost fit: bad options ${JSON.stringify(o)}`);
    }
  }

  /** Steps seen since start (not only those in the window). */
  get stepsSeen(): number {
    return this.total;
  }

  add(s: ServedStep): void {
    if (!(s.wallS > 0) || !Number.isFinite(s.wallS)) return;
    if (this.ring.length < this.options.window) this.ring.push(s);
    else {
      this.ring[this.head] = s;
      this.head = (this.head + 1) % this.options.window;
    }
    this.total += 1;
    this.sinceFit += 1;
    if (this.ring.length >= this.options.minSteps && (this.terms === undefined || this.sinceFit >= this.options.refitEvery)) {
      this.terms = robustFit(this.ring, this.options.trimRel, this.options.terms).terms;
      this.sinceFit = 0;
    }
  }

  /** The current constants, or undefined until `minSteps` steps were seen. */
  current(): CostTerms | undefined {
    return this.terms;
  }

  /**
   * The `q`-quantile of served / predicted step time over the window (with the current constants): the
   * factor that makes the mean fit an upper bound for a share `q` of the steps. Undefined before a fit.
   */
  ratioQuantile(q: number): number | undefined {
    const t = this.terms;
    if (t === undefined) return undefined;
    const r = this.ring.map((s) => s.wallS / Math.max(1e-9, predictStep(t, s))).sort((a, b) => a - b);
    return quantile(r, Math.min(1, Math.max(0, q)));
  }

  /** The window in arrival order. */
  steps(): ServedStep[] {
    return [...this.ring.slice(this.head), ...this.ring.slice(0, this.head)];
  }

  /** A fresh fit of the whole window with its held-out error; undefined until `minSteps` steps were seen. */
  report(): CostFit | undefined {
    const steps = this.steps();
    if (steps.length < this.options.minSteps) return undefined;
    const n = steps.length;
    const sum = (f: (s: ServedStep) => number): number => steps.reduce((a, s) => a + f(s), 0) / n;
    return {
      terms: robustFit(steps, this.options.trimRel, this.options.terms).terms,
      error: heldOutError(steps, this.options.trimRel, this.options.terms),
      fitted: this.options.terms,
      fromS: steps[0].atS,
      toS: steps[n - 1].atS,
      mean: { wallS: sum((s) => s.wallS), prefillTokens: sum((s) => s.prefillTokens), decodeRows: sum((s) => s.decodeRows), adapters: sum((s) => s.adapters), kvTokens: sum((s) => s.kvTokens) },
    };
  }
}

/**
 * Learned output-length predictor that reads the prompt: ridge regression of log(1 + output tokens)
 * on hashed prompt words and bigrams (crossed with the task), per-task intercepts and log prompt
 * length (features.ts). Uncertainty: per-task windows of log-space residuals, so the predicted
 * distribution is exp(fit + residual quantiles). Trains from a records array (`fit`, e.g. the request
 * records in Postgres) and keeps learning online (`observe`, refit every `refitEvery` observations).
 * Until `minTrain` records are seen it answers with the quantile predictor.
 */
import { DEFAULT_FEATURE_DIM, promptFeatures, SparseVector } from './features';
import { QuantilePredictor } from './quantile-predictor';
import { dot, RidgeAccumulator } from './ridge';
import { SortedWindow } from './sorted-window';
import { LengthPredictor, LengthRecord, Prediction } from './types';

export interface PromptPredictorOptions {
  readonly dim: number;
  readonly lambda: number;
  readonly minTrain: number;
  readonly refitEvery: number;
  /** Residuals kept per task (and 4x that overall). */
  readonly window: number;
  readonly minSupport: number;
  readonly levels: readonly number[];
}

export const DEFAULT_PROMPT_OPTIONS: PromptPredictorOptions = {
  dim: DEFAULT_FEATURE_DIM,
  lambda: 10,
  minTrain: 32,
  refitEvery: 64,
  window: 256,
  minSupport: 8,
  levels: [0.1, 0.25, 0.5, 0.75, 0.9],
};

export class PromptPredictor implements LengthPredictor {
  readonly name = 'prompt';
  private readonly opts: PromptPredictorOptions;
  private readonly ridge: RidgeAccumulator;
  private readonly fallback = new QuantilePredictor();
  private readonly residuals = new Map<string, SortedWindow>();
  private readonly allResiduals: SortedWindow;
  private weights: Float64Array | undefined;
  private sinceFit = 0;
  private readonly unscored = new Map<string, { x: SparseVector; y: number }[]>();

  constructor(options: Partial<PromptPredictorOptions> = {}) {
    this.opts = { ...DEFAULT_PROMPT_OPTIONS, ...options };
    if (!Number.isInteger(this.opts.refitEvery) || this.opts.refitEvery < 1) throw new Error('refitEvery must be a positive integer');
    this.ridge = new RidgeAccumulator(this.opts.dim, this.opts.lambda);
    this.allResiduals = new SortedWindow(this.opts.window * 4);
  }

  /** Batch training from finished-request records; residual windows then hold in-sample residuals. */
  fit(records: readonly LengthRecord[]): void {
    const xs = records.map((r) => this.features(r.task, r.promptTokens, r.prompt));
    records.forEach((r, i) => {
      this.ridge.add(xs[i], Math.log1p(r.outputTokens));
      this.fallback.observe(r.task, r.promptTokens, r.outputTokens);
    });
    this.refit();
    if (this.weights === undefined) return;
    const w = this.weights;
    records.forEach((r, i) => this.noteResidual(r.task, Math.log1p(r.outputTokens) - dot(w, xs[i])));
  }

  observe(task: string, promptTokens: number, outputTokens: number, prompt?: string): void {
    const x = this.features(task, promptTokens, prompt);
    const y = Math.log1p(outputTokens);
    if (this.weights !== undefined) this.noteResidual(task, y - dot(this.weights, x));
    else this.keepUnscored(task, x, y);
    this.ridge.add(x, y);
    this.fallback.observe(task, promptTokens, outputTokens);
    this.sinceFit += 1;
  }

  predict(task: string, promptTokens: number, prompt?: string): Prediction {
    if (this.sinceFit >= this.opts.refitEvery || (this.weights === undefined && this.ridge.n >= this.opts.minTrain)) this.refit();
    const window = this.residualWindow(task);
    if (this.weights === undefined || window === undefined) return this.fallback.predict(task, promptTokens);
    const mu = dot(this.weights, this.features(task, promptTokens, prompt));
    const at = (q: number): number => Math.max(1, Math.expm1(mu + window.quantile(q)));
    const points = [0, ...this.opts.levels, 1].map((q) => ({ q, value: at(q) }));
    return { p50: at(0.5), lo: at(0.1), hi: at(0.9), points, support: window.size };
  }

  private features(task: string, promptTokens: number, prompt: string | undefined): SparseVector {
    return promptFeatures(task, promptTokens, prompt, this.opts.dim);
  }

  private refit(): void {
    this.sinceFit = 0;
    if (this.ridge.n < this.opts.minTrain) return;
    const w = this.ridge.solve();
    this.weights = w;
    // Examples seen before the first fit get their (in-sample) residuals now, so the band exists.
    for (const [task, es] of this.unscored) for (const e of es) this.noteResidual(task, e.y - dot(w, e.x));
    this.unscored.clear();
  }

  /** The last `window` examples of each task seen before the first fit. */
  private keepUnscored(task: string, x: SparseVector, y: number): void {
    let es = this.unscored.get(task);
    if (es === undefined) {
      es = [];
      this.unscored.set(task, es);
    }
    es.push({ x, y });
    if (es.length > this.opts.window) es.shift();
  }

  private noteResidual(task: string, r: number): void {
    let w = this.residuals.get(task);
    if (w === undefined) {
      w = new SortedWindow(this.opts.window);
      this.residuals.set(task, w);
    }
    w.push(r);
    this.allResiduals.push(r);
  }

  private residualWindow(task: string): SortedWindow | undefined {
    const w = this.residuals.get(task);
    if (w !== undefined && w.size >= this.opts.minSupport) return w;
    return this.allResiduals.size >= this.opts.minSupport ? this.allResiduals : undefined;
  }
}

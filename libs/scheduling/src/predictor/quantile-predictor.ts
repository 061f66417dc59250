/**
 * Per-task online quantile predictor. Observations are kept in sliding windows keyed by (task,
 * prompt-length bucket); a prediction falls back bucket -> whole task -> all tasks -> prior when a
 * window holds fewer than `minSupport` samples. Buckets are powers of two of the prompt length.
 */
import { SortedWindow } from './sorted-window';
import { LengthPredictor, Prediction } from './types';

export interface QuantilePredictorOptions {
  readonly window: number;
  readonly minSupport: number;
  /** Quantile levels reported between the q = 0 and q = 1 end points. */
  readonly levels: readonly number[];
  /** Prediction when nothing has been observed yet. */
  readonly prior: Prediction;
}

export const PRIOR_PREDICTION: Prediction = {
  p50: 128,
  lo: 16,
  hi: 512,
  points: [
    { q: 0, value: 1 },
    { q: 0.1, value: 16 },
    { q: 0.5, value: 128 },
    { q: 0.9, value: 512 },
    { q: 1, value: 2048 },
  ],
  support: 0,
};

export const DEFAULT_QUANTILE_OPTIONS: QuantilePredictorOptions = {
  window: 256,
  minSupport: 8,
  levels: [0.1, 0.25, 0.5, 0.75, 0.9],
  prior: PRIOR_PREDICTION,
};

/** Bucket index of a prompt length: 0 for < 64 tokens, then one per doubling. */
export function promptBucket(promptTokens: number): number {
  return Math.max(0, Math.floor(Math.log2(Math.max(1, promptTokens) / 32)));
}

export class QuantilePredictor implements LengthPredictor {
  readonly name = 'quantile';
  private readonly buckets = new Map<string, SortedWindow>();
  private readonly tasks = new Map<string, SortedWindow>();
  private readonly global: SortedWindow;
  private readonly opts: QuantilePredictorOptions;

  constructor(options: Partial<QuantilePredictorOptions> = {}) {
    this.opts = { ...DEFAULT_QUANTILE_OPTIONS, ...options };
    if (this.opts.minSupport < 1) throw new Error('minSupport must be >= 1');
    this.global = new SortedWindow(this.opts.window * 4);
  }

  observe(task: string, promptTokens: number, outputTokens: number): void {
    const key = `${task}\u0000${promptBucket(promptTokens)}`;
    windowFor(this.buckets, key, this.opts.window).push(outputTokens);
    windowFor(this.tasks, task, this.opts.window).push(outputTokens);
    this.global.push(outputTokens);
  }

  predict(task: string, promptTokens: number): Prediction {
    const key = `${task}\u0000${promptBucket(promptTokens)}`;
    const candidates = [this.buckets.get(key), this.tasks.get(task), this.global];
    const w = candidates.find((c) => c !== undefined && c.size >= this.opts.minSupport);
    return w === undefined ? this.opts.prior : this.summarize(w);
  }

  private summarize(w: SortedWindow): Prediction {
    const points = [0, ...this.opts.levels, 1].map((q) => ({ q, value: Math.max(1, w.quantile(q)) }));
    return {
      p50: Math.max(1, w.quantile(0.5)),
      lo: Math.max(1, w.quantile(0.1)),
      hi: Math.max(1, w.quantile(0.9)),
      points,
      support: w.size,
    };
  }
}

function windowFor(map: Map<string, SortedWindow>, key: string, capacity: number): SortedWindow {
  let w = map.get(key);
  if (w === undefined) {
    w = new SortedWindow(capacity);
    map.set(key, w);
  }
  return w;
}

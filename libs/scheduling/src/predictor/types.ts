/** Output-length prediction contract: a distribution summary per request, learned online from finishes. */

/** One point of a predicted output-length distribution: P(length <= value) = q. */
export interface QuantilePoint {
  readonly q: number;
  readonly value: number;
}

/**
 * Predicted output length with its uncertainty. `points` is sorted by q, starts at q = 0 (smallest
 * plausible length) and ends at q = 1 (largest); `p50` and the `lo`/`hi` band are read from it.
 */
export interface Prediction {
  readonly p50: number;
  readonly lo: number;
  readonly hi: number;
  readonly points: readonly QuantilePoint[];
  /** How many observations the prediction rests on (0 = prior only). */
  readonly support: number;
}

/** `prompt` is the request text when the caller has it; predictors that do not read it ignore it. */
export interface LengthPredictor {
  readonly name: string;
  predict(task: string, promptTokens: number, prompt?: string): Prediction;
  observe(task: string, promptTokens: number, outputTokens: number, prompt?: string): void;
}

/** A finished request as used for training and offline evaluation. */
export interface LengthRecord {
  readonly task: string;
  readonly promptTokens: number;
  readonly outputTokens: number;
  readonly prompt?: string;
}

export type PredictorName = 'quantile' | 'mean' | 'none' | 'prompt';

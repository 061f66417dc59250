/**
 * Baselines: a per-task running mean (band = mean +- 1.28 sd, a normal 10-90% band), and a constant
 * predictor that knows nothing (used by the "no prediction" ablation).
 */
import { PRIOR_PREDICTION } from './quantile-predictor';
import { LengthPredictor, Prediction } from './types';

interface Moments {
  n: number;
  mean: number;
  m2: number;
}

export class MeanPredictor implements LengthPredictor {
  readonly name = 'mean';
  private readonly stats = new Map<string, Moments>();

  observe(task: string, _promptTokens: number, outputTokens: number): void {
    let s = this.stats.get(task);
    if (s === undefined) {
      s = { n: 0, mean: 0, m2: 0 };
      this.stats.set(task, s);
    }
    s.n += 1;
    const d = outputTokens - s.mean;
    s.mean += d / s.n;
    s.m2 += d * (outputTokens - s.mean);
  }

  predict(task: string, _promptTokens: number): Prediction {
    const s = this.stats.get(task);
    if (s === undefined || s.n === 0) return PRIOR_PREDICTION;
    const sd = s.n > 1 ? Math.sqrt(s.m2 / (s.n - 1)) : s.mean;
    return bandPrediction(s.mean, sd, s.n);
  }
}

export class ConstantPredictor implements LengthPredictor {
  readonly name = 'none';
  constructor(private readonly value: number = PRIOR_PREDICTION.p50) {}
  observe(): void {
    /* learns nothing by design */
  }
  predict(): Prediction {
    return bandPrediction(this.value, this.value, 0);
  }
}

function bandPrediction(mean: number, sd: number, support: number): Prediction {
  const p50 = Math.max(1, mean);
  const lo = Math.max(1, mean - 1.28 * sd);
  const hi = Math.max(p50, mean + 1.28 * sd);
  const points = [
    { q: 0, value: 1 },
    { q: 0.1, value: lo },
    { q: 0.5, value: p50 },
    { q: 0.9, value: hi },
    { q: 1, value: Math.max(hi, mean + 3 * sd) },
  ];
  return { p50, lo, hi, points, support };
}

/** Offline evaluation of length predictors on held-out records: mean absolute error and Spearman rho. */
import { LengthPredictor, LengthRecord } from './types';

export interface PredictorScore {
  readonly name: string;
  readonly n: number;
  readonly mae: number;
  readonly spearman: number;
}

/**
 * Trains `predictor` on `train`, then predicts each `test` record (p50). With `online`, each test
 * record is observed after it is predicted, as in serving.
 */
export function evaluatePredictor(
  predictor: LengthPredictor,
  train: readonly LengthRecord[],
  test: readonly LengthRecord[],
  online = false,
): PredictorScore {
  if (test.length === 0) throw new Error('evaluatePredictor needs at least one test record');
  for (const r of train) predictor.observe(r.task, r.promptTokens, r.outputTokens, r.prompt);
  const predicted: number[] = [];
  for (const r of test) {
    predicted.push(predictor.predict(r.task, r.promptTokens, r.prompt).p50);
    if (online) predictor.observe(r.task, r.promptTokens, r.outputTokens, r.prompt);
  }
  const truth = test.map((r) => r.outputTokens);
  const mae = predicted.reduce((s, p, i) => s + Math.abs(p - truth[i]), 0) / test.length;
  return { name: predictor.name, n: test.length, mae, spearman: spearman(predicted, truth) };
}

/** Spearman rank correlation with average ranks for ties; 0 when either side is constant. */
export function spearman(xs: readonly number[], ys: readonly number[]): number {
  if (xs.length !== ys.length) throw new Error('spearman: length mismatch');
  const rx = ranks(xs);
  const ry = ranks(ys);
  const n = xs.length;
  const mx = rx.reduce((a, b) => a + b, 0) / n;
  const my = ry.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) ** 2;
    syy += (ry[i] - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? 0 : sxy / Math.sqrt(sxx * syy);
}

function ranks(xs: readonly number[]): number[] {
  const idx = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
  const out = new Array<number>(xs.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && xs[idx[j + 1]] === xs[idx[i]]) j++;
    for (let k = i; k <= j; k++) out[idx[k]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return out;
}

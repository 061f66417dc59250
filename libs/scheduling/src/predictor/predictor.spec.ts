import { seededRandom } from '../testing';
import { evaluatePredictor, spearman } from './evaluate';
import { ConstantPredictor, MeanPredictor } from './mean-predictor';
import { promptBucket, QuantilePredictor } from './quantile-predictor';
import { cdfAt, predictedRemaining, quantileAt } from './remaining';
import { SortedWindow } from './sorted-window';
import { LengthRecord } from './types';

/** Five tasks whose output length grows with the prompt-length bucket, +-20% noise. */
function syntheticMix(seed: number, n: number): LengthRecord[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const t = Math.floor(rnd() * 5);
    const promptTokens = Math.round(32 * 2 ** (rnd() * 6));
    const base = [8, 20, 40, 15, 60][t];
    const outputTokens = Math.max(1, Math.round(base * (promptBucket(promptTokens) + 1) * (0.8 + 0.4 * rnd())));
    return { task: `task${t}`, promptTokens, outputTokens };
  });
}

describe('length predictors', () => {
  const train = syntheticMix(1, 3000);
  const test = syntheticMix(2, 600);

  it('quantile-by-bucket beats the per-task mean on MAE and rank correlation', () => {
    const q = evaluatePredictor(new QuantilePredictor(), train, test);
    const m = evaluatePredictor(new MeanPredictor(), train, test);
    expect(q.mae).toBeLessThan(m.mae * 0.6);
    expect(q.spearman).toBeGreaterThan(m.spearman + 0.1);
    expect(q.spearman).toBeGreaterThan(0.9);
  });

  it('the constant predictor has no rank information', () => {
    expect(evaluatePredictor(new ConstantPredictor(), train, test).spearman).toBe(0);
  });

  it('falls back to the task and then the prior when a bucket has no data', () => {
    const p = new QuantilePredictor({ minSupport: 2 });
    expect(p.predict('x', 40).support).toBe(0);
    p.observe('x', 40, 10);
    p.observe('x', 40, 12);
    expect(p.predict('x', 4000).p50).toBeCloseTo(11);
  });
});

describe('spearman', () => {
  it('is 1 for monotone, -1 for reversed, handles ties', () => {
    expect(spearman([1, 2, 3, 4], [10, 20, 25, 100])).toBeCloseTo(1);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1);
    expect(spearman([1, 1, 2, 2], [1, 1, 2, 2])).toBeCloseTo(1);
  });
});

describe('predictedRemaining', () => {
  const p = new QuantilePredictor({ minSupport: 1 });
  for (let v = 1; v <= 100; v++) p.observe('t', 32, v);
  const pred = p.predict('t', 32);

  it('is the median at the start and the conditional median later', () => {
    expect(predictedRemaining(pred, 0)).toBeCloseTo(50.5, 0);
    // Having produced 60 tokens, L | L > 60 is uniform on 60..100, median 80.
    expect(predictedRemaining(pred, 60)).toBeCloseTo(20, 0);
  });

  it('never drops below one token, even past the largest observation', () => {
    expect(predictedRemaining(pred, 500)).toBeGreaterThanOrEqual(1);
  });

  it('cdf and quantile are inverse', () => {
    for (const x of [5, 33, 77]) expect(quantileAt(pred.points, cdfAt(pred.points, x))).toBeCloseTo(x);
  });
});

describe('SortedWindow', () => {
  it('keeps only the last N values', () => {
    const w = new SortedWindow(3);
    [5, 1, 9, 7].forEach((v) => w.push(v));
    expect([w.quantile(0), w.quantile(0.5), w.quantile(1)]).toEqual([1, 7, 9]);
  });
});

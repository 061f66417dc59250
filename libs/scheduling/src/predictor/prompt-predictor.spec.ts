import { seededRandom } from '../testing';
import { evaluatePredictor } from './evaluate';
import { promptFeatures } from './features';
import { MeanPredictor } from './mean-predictor';
import { PromptPredictor } from './prompt-predictor';
import { QuantilePredictor } from './quantile-predictor';
import { choleskySolve, RidgeAccumulator } from './ridge';
import { LengthRecord } from './types';

const FILLER = ['the', 'report', 'on', 'market', 'city', 'team', 'river', 'plan', 'data', 'study'];
const STYLES: readonly [string, number][] = [
  ['answer in one word', 2],
  ['give a short answer', 8],
  ['explain briefly', 30],
  ['explain in detail with examples', 120],
];

/**
 * Three tasks; the output length is set by an instruction phrase in the prompt (x 0.8-1.2 noise), and
 * prompt lengths are independent of it, so only a predictor that reads the prompt can rank within a task.
 */
function instructed(seed: number, n: number): LengthRecord[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const task = `task${Math.floor(rnd() * 3)}`;
    const [phrase, len] = STYLES[Math.floor(rnd() * STYLES.length)];
    const body = Array.from({ length: 5 + Math.floor(rnd() * 40) }, () => FILLER[Math.floor(rnd() * FILLER.length)]);
    const prompt = `${phrase}. ${body.join(' ')}`;
    const outputTokens = Math.max(1, Math.round(len * (task === 'task2' ? 2 : 1) * (0.8 + 0.4 * rnd())));
    return { task, prompt, promptTokens: Math.ceil(prompt.length / 4), outputTokens };
  });
}

describe('PromptPredictor', () => {
  const train = instructed(1, 800);
  const test = instructed(2, 300);

  it('reads the prompt: beats the quantile and mean predictors on MAE and rank correlation', () => {
    const p = new PromptPredictor({ dim: 256 });
    p.fit(train);
    const learned = evaluatePredictor(p, [], test);
    const quantile = evaluatePredictor(new QuantilePredictor(), train, test);
    const mean = evaluatePredictor(new MeanPredictor(), train, test);
    expect(learned.mae).toBeLessThan(quantile.mae * 0.4);
    expect(learned.mae).toBeLessThan(mean.mae * 0.4);
    expect(learned.spearman).toBeGreaterThan(0.9);
    expect(learned.spearman).toBeGreaterThan(quantile.spearman + 0.2);
  });

  it('learns online through observe() as evaluatePredictor feeds it', () => {
    const score = evaluatePredictor(new PromptPredictor({ dim: 256, refitEvery: 200 }), train, test);
    expect(score.spearman).toBeGreaterThan(0.9);
  });

  it('carries its uncertainty: a band around the median, ordered quantile points', () => {
    const p = new PromptPredictor({ dim: 256 });
    p.fit(train);
    const prompt = `explain briefly. ${Array.from({ length: 25 }, (_, i) => FILLER[i % FILLER.length]).join(' ')}`;
    const pred = p.predict('task0', Math.ceil(prompt.length / 4), prompt);
    expect(pred.lo).toBeLessThan(pred.p50);
    expect(pred.hi).toBeGreaterThan(pred.p50);
    expect(pred.p50).toBeGreaterThan(20);
    expect(pred.p50).toBeLessThan(40);
    for (let i = 1; i < pred.points.length; i++) expect(pred.points[i].value).toBeGreaterThanOrEqual(pred.points[i - 1].value);
  });

  it('answers with the quantile fallback before it has minTrain records', () => {
    const p = new PromptPredictor({ dim: 64, minTrain: 10 });
    const q = new QuantilePredictor();
    for (let i = 0; i < 9; i++) {
      p.observe('t', 16, 40 + i, 'hello there');
      q.observe('t', 16, 40 + i);
    }
    expect(p.predict('t', 16, 'hello there')).toEqual(q.predict('t', 16));
    p.observe('t', 16, 60, 'hello there');
    expect(p.predict('t', 16, 'hello there').points).toHaveLength(7);
  });
});

describe('ridge and features', () => {
  it('solves a small SPD system exactly', () => {
    const w = choleskySolve(Float64Array.from([4, 2, 2, 3]), Float64Array.from([2, 1]), 2);
    expect(w[0]).toBeCloseTo(0.5);
    expect(w[1]).toBeCloseTo(0);
  });

  it('recovers y = 3 + 2x with a small penalty', () => {
    const r = new RidgeAccumulator(2, 1e-6);
    for (let x = 0; x < 10; x++) r.add({ index: Int32Array.from([0, 1]), value: Float64Array.from([1, x]) }, 3 + 2 * x);
    const w = r.solve();
    expect(w[0]).toBeCloseTo(3, 3);
    expect(w[1]).toBeCloseTo(2, 3);
  });

  it('hashes deterministically, always sets the bias, rejects tiny dims', () => {
    const a = promptFeatures('t', 10, 'Explain briefly!', 128);
    expect(promptFeatures('t', 10, 'explain BRIEFLY!', 128)).toEqual(a);
    expect(a.index[0]).toBe(0);
    expect(Math.max(...a.index)).toBeLessThan(128);
    expect(() => promptFeatures('t', 10, 'x', 4)).toThrow(/dim/);
  });
});

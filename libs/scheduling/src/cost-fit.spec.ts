import { CostTerms, fitSteps, heldOutError, OnlineCostFit, predictStep } from './cost-fit';
import type { ServedStep } from './cost-steps';

const TRUTH: CostTerms = { base_s: 0.006, prefill_token_s: 2e-4, decode_row_s: 4e-4, adapter_s: 1e-3, kv_token_s: 4e-6, prefill_step_s: 0.003 };

/** Deterministic pseudo-random numbers in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function synthetic(n: number, seed: number, noise: (r: () => number) => number, truth = TRUTH): ServedStep[] {
  const r = rng(seed);
  const out: ServedStep[] = [];
  for (let i = 0; i < n; i++) {
    const decodeRows = Math.floor(r() * 64);
    const prefillTokens = r() < 0.3 ? 16 + Math.floor(r() * 800) : 0;
    const adapters = 1 + Math.floor(r() * 4);
    const kvTokens = Math.floor(decodeRows * (50 + r() * 300) + prefillTokens);
    const shape = { prefillTokens, decodeRows, adapters, kvTokens };
    const wallS = predictStep(truth, shape) * noise(r);
    out.push({ ...shape, wallS, atS: i * 0.02 });
  }
  return out;
}

describe('fitSteps (batch NNLS)', () => {
  it('recovers the six terms from noiseless steps', () => {
    const got = fitSteps(synthetic(400, 1, () => 1));
    for (const k of Object.keys(TRUTH) as (keyof CostTerms)[]) expect(got[k]).toBeCloseTo(TRUTH[k], 8);
  });

  it('recovers them within 10% under 20% multiplicative noise, with the total time right within 2%', () => {
    const steps = synthetic(2000, 2, (r) => 0.8 + 0.4 * r());
    const got = fitSteps(steps);
    for (const k of ['base_s', 'prefill_token_s', 'decode_row_s', 'kv_token_s'] as const) expect(Math.abs(got[k] / TRUTH[k] - 1)).toBeLessThan(0.1);
    const err = heldOutError(steps, Number.POSITIVE_INFINITY);
    expect(Math.abs(err.sum_ratio - 1)).toBeLessThan(0.02);
    expect(err.median_rel).toBeLessThan(0.15);
    expect(err.median_rel).toBeGreaterThan(0.02); // the noise is there, and measured
    expect(err.n_heldout).toBe(400);
  });

  it('gives 0 for a term the truth does not have', () => {
    const got = fitSteps(synthetic(300, 3, () => 1, { ...TRUTH, adapter_s: 0 }));
    expect(got.adapter_s).toBeCloseTo(0, 10);
  });
});

describe('OnlineCostFit', () => {
  it('gives nothing before minSteps, then the truth; follows a change once the window holds the new regime', () => {
    const fit = new OnlineCostFit({ window: 300, minSteps: 100, refitEvery: 20 });
    const a = synthetic(99, 4, () => 1);
    a.forEach((s) => fit.add(s));
    expect(fit.current()).toBeUndefined();
    synthetic(1, 5, () => 1).forEach((s) => fit.add(s));
    expect(fit.current()?.base_s).toBeCloseTo(TRUTH.base_s, 8);
    // the machine gets 2x slower (contention): after a full window of new steps the fit says so
    const slow: CostTerms = Object.fromEntries(Object.entries(TRUTH).map(([k, v]) => [k, 2 * v])) as unknown as CostTerms;
    synthetic(300, 6, () => 1, slow).forEach((s) => fit.add(s));
    expect(fit.current()?.decode_row_s).toBeCloseTo(slow.decode_row_s, 8);
    expect(fit.stepsSeen).toBe(400);
    expect(fit.steps()).toHaveLength(300);
  });

  it('trimRel drops stalls: the fit stays near the truth although 5% of steps stall 10x', () => {
    const steps = synthetic(1000, 7, (r) => (r() < 0.05 ? 10 : 1));
    const plain = new OnlineCostFit({ window: 1000, minSteps: 100 });
    const trimmed = new OnlineCostFit({ window: 1000, minSteps: 100, trimRel: 1 });
    steps.forEach((s) => (plain.add(s), trimmed.add(s)));
    const t = trimmed.report();
    const p = plain.report();
    expect(t).toBeDefined();
    expect(Math.abs((t?.terms.decode_row_s ?? 0) / TRUTH.decode_row_s - 1)).toBeLessThan(0.15);
    expect(t?.error.n_trimmed).toBeGreaterThan(20);
    // the untrimmed fit predicts the mean (stalls included), so it is well above the stall-free truth
    expect(predictStep(p?.terms as CostTerms, { prefillTokens: 0, decodeRows: 32, adapters: 2, kvTokens: 6000 })).toBeGreaterThan(1.2 * predictStep(TRUTH, { prefillTokens: 0, decodeRows: 32, adapters: 2, kvTokens: 6000 }));
  });

  it('ratioQuantile: the factor that bounds a share of the steps', () => {
    // every 4th step is 2x the model, the rest exact: the median ratio is ~1 (a bit below: the mean fit sits between),
    // the 90th percentile ~2x that
    const fit = new OnlineCostFit({ window: 400, minSteps: 100 });
    expect(fit.ratioQuantile(0.9)).toBeUndefined();
    let i = 0;
    synthetic(400, 8, () => (i++ % 4 === 3 ? 2 : 1)).forEach((s) => fit.add(s));
    const med = fit.ratioQuantile(0.5) ?? 0;
    const p90 = fit.ratioQuantile(0.9) ?? 0;
    expect(med).toBeGreaterThan(0.7);
    expect(med).toBeLessThan(1);
    expect(p90 / med).toBeCloseTo(2, 1);
  });

  it('ignores non-positive or non-finite wall times and rejects bad options', () => {
    const fit = new OnlineCostFit({ window: 10, minSteps: 6 });
    fit.add({ wallS: 0, prefillTokens: 0, decodeRows: 1, adapters: 1, kvTokens: 1, atS: 0 });
    fit.add({ wallS: Number.NaN, prefillTokens: 0, decodeRows: 1, adapters: 1, kvTokens: 1, atS: 0 });
    expect(fit.stepsSeen).toBe(0);
    expect(() => new OnlineCostFit({ window: 10, minSteps: 20 })).toThrow(/bad options/);
  });
});

describe('fitting some of the terms', () => {
  it('a spurious term left out: the collinear truth goes to the terms that remain', () => {
    // adapters move with rows here (1 adapter per 8 rows), so adapter_s and decode_row_s are not separable
    const steps: ServedStep[] = [];
    for (let i = 0; i < 200; i++) {
      const decodeRows = 8 + (i % 7) * 8;
      const shape = { prefillTokens: 0, decodeRows, adapters: decodeRows / 8, kvTokens: 100 * decodeRows };
      steps.push({ ...shape, wallS: predictStep({ ...TRUTH, adapter_s: 0, prefill_step_s: 0 }, shape), atS: i });
    }
    const without = fitSteps(steps, ['base_s', 'decode_row_s', 'kv_token_s']);
    expect(without.adapter_s).toBe(0);
    expect(without.prefill_token_s).toBe(0);
    expect(without.base_s).toBeCloseTo(TRUTH.base_s, 8);
    const predicted = predictStep(without, { prefillTokens: 0, decodeRows: 30, adapters: 4, kvTokens: 3000 });
    expect(predicted).toBeCloseTo(predictStep({ ...TRUTH, adapter_s: 0 }, { prefillTokens: 0, decodeRows: 30, adapters: 4, kvTokens: 3000 }), 8);
    const fit = new OnlineCostFit({ window: 200, minSteps: 50, terms: ['base_s', 'decode_row_s', 'kv_token_s'] });
    steps.forEach((s) => fit.add(s));
    expect(fit.report()?.fitted).toEqual(['base_s', 'decode_row_s', 'kv_token_s']);
    expect(() => new OnlineCostFit({ terms: ['rows_s' as never] })).toThrow(/bad options/);
  });
});

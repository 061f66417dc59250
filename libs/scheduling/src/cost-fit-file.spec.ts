import { OnlineCostFit, predictStep } from './cost-fit';
import { costModelFileOf, stepCostOfTerms } from './cost-fit-file';
import { parseCostModel, stepCostOf } from './cost-model';

describe('costModelFileOf', () => {
  it('writes a calibration file that parseCostModel accepts, with the fit, its error and provenance', () => {
    const fit = new OnlineCostFit({ window: 50, minSteps: 10 });
    for (let i = 0; i < 50; i++) {
      const shape = { prefillTokens: i % 3 === 0 ? 100 + i : 0, decodeRows: 1 + (i % 17), adapters: 1 + (i % 4), kvTokens: 100 * (1 + (i % 13)) };
      fit.add({ ...shape, wallS: predictStep({ base_s: 0.01, prefill_token_s: 1e-4, decode_row_s: 1e-3, adapter_s: 0, kv_token_s: 1e-6, prefill_step_s: 0.002 }, shape), atS: i });
    }
    const report = fit.report();
    if (report === undefined) throw new Error('no fit');
    const file = costModelFileOf(report, { kv_blocks: 512, block_size: 16, max_batch_rows: 64, max_prefill_tokens: 2048 }, { ttft_s: 1.5, tpot_s: 0.1 }, { label: 'served-test', dateUtc: '2026-11-29T22:00:00Z', worker: '127.0.0.1:1', context: 'policy inlaid', spanS: 49 }, fit.steps());
    const parsed = parseCostModel(JSON.parse(JSON.stringify(file)));
    expect(parsed.label).toBe('served-test');
    expect(parsed.base_s).toBeCloseTo(0.01, 8);
    expect(parsed.prefill_step_s).toBeCloseTo(0.002, 8);
    expect(stepCostOf(parsed)).toEqual(stepCostOfTerms(report.terms));
    expect(file.fit_error.n_steps).toBe(50);
    expect(file.measured.terms_fitted).toEqual(['base_s', 'prefill_token_s', 'decode_row_s', 'adapter_s', 'kv_token_s', 'prefill_step_s']);
    expect(file.points).toHaveLength(50);
    expect(file.source).toMatch(/Held-out median relative error 0\.0%/);
  });
});

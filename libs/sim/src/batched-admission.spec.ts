import { DEFAULT_PROFILE_OPTIONS, generateTrace, syntheticProfiles } from '@inlaid/workload';
import { parseCostModel } from './cost-model';
import { simulate } from './simulator';

/** The measured H200 step costs (h200-measured.json): decode is cheap, every step that prefills pays 36.7 ms. */
const h200 = parseCostModel({
  label: 'h200-like',
  source: 'unit test (constants of h200-measured.json)',
  placeholder: true,
  base_s: 0.00422,
  prefill_token_s: 0.0000109,
  decode_row_s: 0.0000578,
  adapter_s: 0.0000645,
  kv_token_s: 0.000000092,
  prefill_step_s: 0.0367,
  kv_blocks: 14408,
  block_size: 16,
  max_batch_rows: 256,
  max_prefill_tokens: 2048,
  suggested_slo: { ttft_s: 2, tpot_s: 0.05 },
});

describe('batched prefill admission in the simulator', () => {
  // Just above the saturated rate of fifo on this model (28 req/s), 60 s.
  const trace = generateTrace(syntheticProfiles(100, 1, DEFAULT_PROFILE_OPTIONS), { rate: 31, cv: 2, alpha: 1, durationS: 60, seed: 1 });
  const run = (mode: 'auto' | 'off') =>
    simulate(trace, { scheduler: { policy: 'inlaid', inlaid: { batchedAdmission: { mode } } }, costModel: h200, workers: 1, drainS: 600 });

  it('with a fixed prefill-step cost, holding arrivals lowers TPOT and raises SLO attainment without losing throughput', () => {
    const on = run('auto').report;
    const off = run('off').report;
    expect(on.finished).toBe(trace.length);
    expect(on.mean_tpot_s).toBeLessThan(off.mean_tpot_s);
    expect(on.slo_attainment).toBeGreaterThan(off.slo_attainment + 0.05);
    expect(on.throughput_tok_s).toBeGreaterThanOrEqual(0.99 * off.throughput_tok_s);
  });

  it("'auto' leaves a model without a fixed prefill-step cost unchanged", () => {
    const plain = { ...h200, prefill_step_s: 0 };
    const a = simulate(trace, { scheduler: { policy: 'inlaid' }, costModel: plain, workers: 1, drainS: 600 }).report;
    const b = simulate(trace, { scheduler: { policy: 'inlaid', inlaid: { batchedAdmission: { mode: 'off' } } }, costModel: plain, workers: 1, drainS: 600 }).report;
    expect(a).toEqual(b);
  });
});

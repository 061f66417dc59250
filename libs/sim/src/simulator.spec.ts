import { POLICY_NAMES } from '@inlaid/scheduling';
import { generateTrace, parseFlags, syntheticProfiles } from '@inlaid/workload';
import { CostModel, parseCostModel, stepTime } from './cost-model';
import { percentile } from './metrics';
import { schedulerConfigFromFlags, SIM_FLAGS } from './options';
import { simulate } from './simulator';
import { addStepTerms, termsTotal, zeroTerms } from './step-terms';

const model: CostModel = parseCostModel({
  label: 'test',
  source: 'unit test',
  placeholder: true,
  base_s: 0.005,
  prefill_token_s: 0.00003,
  decode_row_s: 0.0001,
  adapter_s: 0.001,
  kv_token_s: 0,
  kv_blocks: 400,
  block_size: 16,
  max_batch_rows: 32,
  max_prefill_tokens: 2048,
  suggested_slo: { ttft_s: 2, tpot_s: 0.1 },
});

const trace = generateTrace(syntheticProfiles(20, 3), { rate: 10, cv: 2, alpha: 1, durationS: 15, seed: 3 });

describe('simulate', () => {
  it.each(POLICY_NAMES)('%s: every request finishes exactly once with all its tokens', (policy) => {
    const { report, stats } = simulate(trace, { scheduler: { policy }, costModel: model, workers: 2, drainS: 10_000 });
    expect(report.requests).toBe(trace.length);
    expect(report.finished).toBe(trace.length);
    expect(report.unfinished + report.aborted).toBe(0);
    const tokens = trace.reduce((a, r) => a + r.output_tokens, 0);
    expect(report.throughput_tok_s * (stats.endS - trace[0].arrival_s)).toBeCloseTo(tokens, 3);
    expect(report.slo_attainment).toBeGreaterThan(0);
    expect(report.slo_attainment).toBeLessThanOrEqual(1);
  });

  it('is deterministic', () => {
    const a = simulate(trace, { scheduler: { policy: 'inlaid' }, costModel: model, workers: 1, drainS: 10_000 });
    const b = simulate(trace, { scheduler: { policy: 'inlaid' }, costModel: model, workers: 1, drainS: 10_000 });
    expect(a).toEqual(b);
  });

  it('counts requests cut off by the horizon as unfinished SLO misses', () => {
    const { report } = simulate(trace, { scheduler: { policy: 'fifo' }, costModel: { ...model, base_s: 0.5 }, workers: 1, drainS: 1 });
    expect(report.unfinished).toBeGreaterThan(0);
    expect(report.finished + report.unfinished).toBe(trace.length);
  });
});

describe('cost model', () => {
  it('adds up its terms and rejects incomplete calibrations', () => {
    expect(stepTime(model, { prefillTokens: 100, decodeRows: 10, adapters: 3, kvTokens: 0 })).toBeCloseTo(0.005 + 0.003 + 0.001 + 0.003);
    expect(() => parseCostModel({ ...model, kv_blocks: 0 })).toThrow(/kv_blocks/);
  });

  it('charges the optional fixed prefill-step cost only to steps that prefill', () => {
    const m = parseCostModel({ ...model, prefill_step_s: 0.03 });
    expect(stepTime(m, { prefillTokens: 100, decodeRows: 10, adapters: 3, kvTokens: 0 })).toBeCloseTo(0.012 + 0.03);
    expect(stepTime(m, { prefillTokens: 0, decodeRows: 10, adapters: 3, kvTokens: 0 })).toBeCloseTo(0.005 + 0.001 + 0.003);
    expect(() => parseCostModel({ ...model, prefill_step_s: -1 })).toThrow(/prefill_step_s/);
  });

  it('percentile interpolates', () => {
    expect(percentile([1, 2, 3, 4], 50)).toBeCloseTo(2.5);
  });
});

describe('step-time terms', () => {
  const withFixed = parseCostModel({ ...model, kv_token_s: 1e-6, prefill_step_s: 0.01 }, 'terms');

  it('add up to stepTime for any step shape', () => {
    for (const s of [{ prefillTokens: 100, decodeRows: 3, adapters: 2, kvTokens: 500 }, { prefillTokens: 0, decodeRows: 7, adapters: 1, kvTokens: 40 }]) {
      const t = zeroTerms();
      addStepTerms(t, withFixed, s);
      expect(termsTotal(t)).toBeCloseTo(stepTime(withFixed, s), 12);
    }
  });

  it('count every simulated step once: base = steps x base_s, and one worker is busy no longer than the run', () => {
    const { stats } = simulate(trace, { scheduler: { policy: 'inlaid' }, costModel: withFixed, workers: 1, drainS: 10_000 });
    expect(stats.time.baseS).toBeCloseTo(stats.steps * withFixed.base_s, 9);
    expect(stats.time.prefillS).toBeGreaterThan(0);
    expect(termsTotal(stats.time)).toBeLessThanOrEqual(stats.endS + 1e-9);
    expect(termsTotal(stats.time)).toBeGreaterThan(0.5 * stats.endS); // overloaded: 10 req/s on one worker
  });
});

describe('sim flags', () => {
  it('--lost-slack sets inlaid.lostSlack; left out, the library default stands', () => {
    expect(schedulerConfigFromFlags(parseFlags(['--lost-slack', 'on'], [])).inlaid?.lostSlack).toBe(true);
    expect(schedulerConfigFromFlags(parseFlags(['--lost-slack', 'off'], [])).inlaid?.lostSlack).toBe(false);
    expect(schedulerConfigFromFlags(parseFlags([], [])).inlaid).not.toHaveProperty('lostSlack');
    expect(() => schedulerConfigFromFlags(parseFlags(['--lost-slack', 'maybe'], []))).toThrow(/on or off/);
  });

  it('--lost-reserve-quantile sets inlaid.lostReserveQuantile (off = null); left out, the library default stands', () => {
    expect(schedulerConfigFromFlags(parseFlags(['--lost-reserve-quantile', '0.1'], [])).inlaid?.lostReserveQuantile).toBe(0.1);
    expect(schedulerConfigFromFlags(parseFlags(['--lost-reserve-quantile', 'off'], [])).inlaid?.lostReserveQuantile).toBeNull();
    expect(schedulerConfigFromFlags(parseFlags([], [])).inlaid).not.toHaveProperty('lostReserveQuantile');
    expect(() => schedulerConfigFromFlags(parseFlags(['--lost-reserve-quantile', '2'], []))).toThrow(/off or in \[0, 1\]/);
    expect(SIM_FLAGS).toContain('lost-reserve-quantile'); // else the CLI rejects it as unknown
  });
});

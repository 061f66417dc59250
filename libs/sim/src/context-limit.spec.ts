import { generateTrace, syntheticProfiles, TraceRecord } from '@inlaid/workload';
import { fitContext } from './context-limit';
import { CostModel, parseCostModel } from './cost-model';
import { requestLine, requestLines } from './request-dump';
import { simulate } from './simulator';

const model: CostModel = parseCostModel({
  label: 'test',
  source: 'unit test',
  placeholder: true,
  base_s: 0.005,
  prefill_token_s: 0.0001,
  decode_row_s: 0.001,
  adapter_s: 0,
  kv_token_s: 0,
  kv_blocks: 200,
  block_size: 16,
  max_batch_rows: 16,
  max_prefill_tokens: 2048,
  suggested_slo: { ttft_s: 1, tpot_s: 0.05 },
});

const rec = (arrival_s: number, prompt_tokens: number, output_tokens: number, task = 't0'): TraceRecord => ({ arrival_s, task, prompt_tokens, output_tokens });

describe('fitContext', () => {
  it('refuses prompts of max_model_len tokens or more and cuts outputs at the limit', () => {
    expect(fitContext(rec(0, 2000, 50), undefined)).toEqual({ rejected: false, outputTokens: 50 });
    expect(fitContext(rec(0, 1024, 50), 1024)).toEqual({ rejected: true });
    expect(fitContext(rec(0, 1023, 50), 1024)).toEqual({ rejected: false, outputTokens: 1 });
    expect(fitContext(rec(0, 1000, 50), 1024)).toEqual({ rejected: false, outputTokens: 24 });
    expect(fitContext(rec(0, 100, 50), 1024)).toEqual({ rejected: false, outputTokens: 50 });
  });
});

describe('simulate with maxModelLen', () => {
  const base = generateTrace(syntheticProfiles(4, 5), { rate: 20, cv: 1, alpha: 1, durationS: 10, seed: 5 });
  // every 7th prompt is made over-long, every 11th is cut by the limit
  const LIMIT = 1024;
  const trace = base.map((r, i) => (i % 7 === 3 ? { ...r, prompt_tokens: 1100 + i } : i % 11 === 5 ? { ...r, prompt_tokens: 1000, output_tokens: 60 } : r));
  const opts = { scheduler: { policy: 'fifo' as const }, costModel: model, workers: 1, drainS: 10_000 };

  it('refuses over-long prompts on arrival and serves the rest exactly as a trace without them', () => {
    const limited = simulate(trace, { ...opts, maxModelLen: LIMIT });
    const over = trace.filter((r) => r.prompt_tokens >= LIMIT).length;
    expect(over).toBeGreaterThan(5);
    expect(limited.report.rejected).toBe(over);
    expect(limited.report.finished).toBe(trace.length - over);
    expect(limited.report.unfinished + limited.report.aborted).toBe(0);
    // the served part, simulated on its own with outputs cut at the limit, gives the same outcomes
    const served = trace.filter((r) => r.prompt_tokens < LIMIT).map((r) => ({ ...r, output_tokens: Math.min(r.output_tokens, LIMIT - r.prompt_tokens) }));
    const alone = simulate(served, opts);
    const kept = limited.results.filter((r) => r.rejected !== true);
    expect(kept.map((r) => [r.finishS, r.ttftS, r.outputTokens])).toEqual(alone.results.map((r) => [r.finishS, r.ttftS, r.outputTokens]));
    expect(limited.stats.steps).toBe(alone.stats.steps);
    // rejected requests are SLO misses that generated nothing
    for (const r of limited.results.filter((x) => x.rejected === true)) {
      expect(r).toMatchObject({ metSlo: false, outputTokens: 0 });
      expect(r.finishS).toBeUndefined();
      expect(r.admitS).toBeUndefined();
    }
    expect(limited.report.slo_attainment).toBeCloseTo((alone.report.slo_attainment * served.length) / trace.length, 12);
  });

  it('without a limit serves over-long prompts and their whole outputs (the old behaviour, which the real worker never does)', () => {
    const unlimited = simulate(trace, opts);
    expect(unlimited.report.rejected).toBe(0);
    expect(unlimited.report.finished).toBe(trace.length);
    const limited = simulate(trace, { ...opts, maxModelLen: LIMIT });
    expect(unlimited.stats.steps).toBeGreaterThan(limited.stats.steps);
    const cut = limited.results.find((r, i) => trace[i].prompt_tokens === 1000);
    expect(cut?.outputTokens).toBe(24);
  });

  it('rejects a limit that is not an integer >= 2', () => {
    expect(() => simulate(trace, { ...opts, maxModelLen: 0 })).toThrow(/maxModelLen/);
    expect(() => simulate(trace, { ...opts, maxModelLen: 10.5 })).toThrow(/maxModelLen/);
  });
});

describe('request dump', () => {
  it('gives each request its queueing delay, TTFT and TPOT, with nulls for refused ones', () => {
    const trace = [rec(0, 100, 5), rec(0.001, 5000, 5), rec(0.002, 200, 3, 't1')];
    const { results } = simulate(trace, { scheduler: { policy: 'fifo' }, costModel: model, workers: 1, drainS: 100, maxModelLen: 1024 });
    const lines = requestLines(results).trim().split('\n').map((l) => JSON.parse(l) as ReturnType<typeof requestLine>);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatchObject({ i: 1, rejected: true, queue_s: null, ttft_s: null, latency_s: null, met_slo: false, prompt_tokens: 5000 });
    // the first arrives at an idle worker: admitted at once, first token after one prefill step
    expect(lines[0].queue_s).toBe(0);
    expect(lines[0].ttft_s).toBeCloseTo(0.005 + 100 * 0.0001, 12);
    // the third (arriving at 2 ms) waits for the first step to end, then is prefilled in the next one
    const q = lines[2].queue_s as number;
    expect(q).toBeCloseTo((lines[0].ttft_s as number) - 0.002, 12);
    expect(lines[2].ttft_s as number).toBeGreaterThan(q);
    expect(lines[2].output_tokens).toBe(3);
    expect(lines[2].latency_s as number).toBeGreaterThan(lines[2].ttft_s as number);
  });
});

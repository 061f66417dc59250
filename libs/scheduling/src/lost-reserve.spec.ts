import { resolveConfig } from './config';
import { InlaidPolicy } from './policies/inlaid';
import { TrackedRequest } from './tracked';

const SLO = { ttftS: 1, tpotS: 0.1 };

/** A running request with a 100-token prompt, 10 tokens generated, predicted 100–300 output tokens. */
function running(firstTokenS: number): TrackedRequest {
  return {
    spec: { id: 'r', task: 't', promptTokens: 100, arrivalS: 0 },
    slo: SLO,
    prediction: { p50: 200, lo: 100, hi: 300, support: 10, points: [{ q: 0, value: 100 }, { q: 1, value: 300 }] },
    phase: 'running',
    workerId: 'w0',
    generated: 10,
    firstTokenS,
    preemptions: 0,
    hopeless: false,
    version: 0,
    level: 0,
    levelTokens: 0,
    seq: 0,
  };
}

const policy = (lostReserveQuantile: number | null): InlaidPolicy =>
  new InlaidPolicy(resolveConfig({ inlaid: { lostReserveQuantile } }).inlaid);

describe('inlaid.lostReserveQuantile (KV reserved for lost rows)', () => {
  const lostRow = running(5); // first token 5 s after arrival: past its 1 s TTFT SLO
  const saveableRow = running(0.5);

  it('off (null, the default; 0.1 in the v7 profile): a lost row reserves only its context plus the next token', () => {
    expect(resolveConfig().inlaid.lostReserveQuantile).toBeNull();
    expect(policy(null).reservedTokens(lostRow)).toBe(111);
  });

  it('on: a lost row reserves its context plus the chosen quantile of its remaining output', () => {
    // Remaining given 10 generated: quantile 0 -> 90 tokens (100 - 10), quantile 0.5 -> 190 (200 - 10).
    expect(policy(0).reservedTokens(lostRow)).toBe(110 + 90);
    expect(policy(0.5).reservedTokens(lostRow)).toBe(110 + 190);
  });

  it('leaves saveable rows on reserveQuantile', () => {
    const q = resolveConfig().inlaid.reserveQuantile;
    expect(q).toBe(0.1);
    expect(policy(0.9).reservedTokens(saveableRow)).toBe(policy(null).reservedTokens(saveableRow));
    expect(policy(null).reservedTokens(saveableRow)).toBe(110 + 110); // quantile 0.1 of 100..300 = 120, minus 10
  });

  it('rejects a quantile outside [0, 1]', () => {
    expect(() => resolveConfig({ inlaid: { lostReserveQuantile: 1.5 } })).toThrow(/lostReserveQuantile/);
    expect(() => resolveConfig({ inlaid: { lostReserveQuantile: -0.1 } })).toThrow(/lostReserveQuantile/);
  });
});

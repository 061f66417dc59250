import { readFileSync } from 'node:fs';
import { parseCostModel } from './cost-model';
import { DEFAULT_COST_MODEL, DEFAULT_COST_MODEL_FILE } from './default-cost-model';

describe('the CLI default cost model', () => {
  it('is the served CPU fit, a measured file that parses', () => {
    expect(DEFAULT_COST_MODEL.endsWith(DEFAULT_COST_MODEL_FILE)).toBe(true);
    const m = parseCostModel(JSON.parse(readFileSync(DEFAULT_COST_MODEL, 'utf8')), DEFAULT_COST_MODEL);
    expect(m.label).toBe('cpu-tiny-served-s7');
    expect(m.placeholder).toBe(false);
    // The served fit's steps: 3.2 ms per decode row and 7.4 ms per step that prefills (the stale 11-29 engine fit had 9.5 ms base).
    expect(m.decode_row_s).toBeGreaterThan(0.003);
    expect(m.base_s).toBeLessThan(0.001);
  });
});

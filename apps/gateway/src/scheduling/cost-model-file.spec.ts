import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CostModelFileError, loadStepCost } from './cost-model-file';

const H200 = join(__dirname, '../../../../libs/sim/calibration/h200-measured.json');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'inlaid-cost-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('loadStepCost (INLAID_COST_MODEL)', () => {
  it('is undefined when the setting is unset', () => {
    expect(loadStepCost(null)).toBeUndefined();
  });

  it("maps the measured H200 model onto the scheduler's step cost", () => {
    const c = loadStepCost(H200);
    expect(c).toEqual({
      baseS: expect.closeTo(0.004218, 6), decodeRowS: expect.closeTo(5.7822e-5, 9), adapterS: expect.closeTo(6.4482e-5, 9),
      kvTokenS: expect.closeTo(9.2146e-8, 12), prefillTokenS: expect.closeTo(1.0864e-5, 9), prefillStepS: expect.closeTo(0.036681, 6),
    });
  });

  it('names the variable and the path for a missing file', () => {
    const p = join(dir, 'nope.json');
    expect(() => loadStepCost(p)).toThrow(CostModelFileError);
    expect(() => loadStepCost(p)).toThrow(`INLAID_COST_MODEL: cannot read "${p}"`);
  });

  it('rejects a file that is not JSON', () => {
    const p = file('broken.json', '{ "base_s": 0.1, ');
    expect(() => loadStepCost(p)).toThrow(`INLAID_COST_MODEL: "${p}" is not valid JSON`);
  });

  it('rejects JSON that is not a valid cost model, naming the bad field', () => {
    const p = file('bad.json', JSON.stringify({ label: 'x', source: 'y', placeholder: false, base_s: -1 }));
    expect(() => loadStepCost(p)).toThrow(CostModelFileError);
    expect(() => loadStepCost(p)).toThrow(/INLAID_COST_MODEL: ".*bad\.json": "base_s" must be a number >= 0/);
  });
});

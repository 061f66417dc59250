import { nnlsNormal } from './cost-nnls';

function normal(x: number[][], y: number[]): { g: number[][]; b: number[] } {
  const k = x[0].length;
  const g = Array.from({ length: k }, (_, i) => Array.from({ length: k }, (_, j) => x.reduce((s, r) => s + r[i] * r[j], 0)));
  const b = Array.from({ length: k }, (_, i) => x.reduce((s, r, n) => s + r[i] * y[n], 0));
  return { g, b };
}

describe('nnlsNormal', () => {
  it('recovers non-negative truth exactly from noiseless data, whatever the column scales', () => {
    const truth = [0.002, 1.2e-4, 3e-4, 0, 5e-6];
    const x: number[][] = [];
    for (let i = 0; i < 60; i++) x.push([1, (i * 37) % 500, (i * 7) % 64, 1 + (i % 4), (i * 911) % 20000]);
    const y = x.map((r) => r.reduce((s, v, j) => s + v * truth[j], 0));
    const { g, b } = normal(x, y);
    const got = nnlsNormal(g, b);
    got.forEach((v, j) => expect(v).toBeCloseTo(truth[j], 9));
  });

  it('clamps a term whose unconstrained optimum is negative to 0 and refits the rest', () => {
    // y = 1 + 2*a - 1*c with columns a, c: the unconstrained fit wants c < 0.
    const x: number[][] = [];
    for (let i = 0; i < 30; i++) x.push([1, i % 5, (i * 3) % 7]);
    const y = x.map((r) => 1 + 2 * r[1] - r[2]);
    const { g, b } = normal(x, y);
    const got = nnlsNormal(g, b);
    expect(got[2]).toBe(0);
    expect(got.every((v) => v >= 0)).toBe(true);
    // the constrained optimum equals the least-squares fit on the remaining columns
    const sub = normal(x.map((r) => [r[0], r[1]]), y);
    const free = nnlsNormal(sub.g, sub.b);
    expect(got[0]).toBeCloseTo(free[0], 9);
    expect(got[1]).toBeCloseTo(free[1], 9);
  });

  it('leaves a column with no data at 0', () => {
    const x = [[1, 0], [1, 0], [1, 0]];
    const { g, b } = normal(x, [2, 2, 2]);
    const got = nnlsNormal(g, b);
    expect(got[0]).toBeCloseTo(2, 6);
    expect(got[1]).toBe(0);
  });
});

import { backoffDelay } from './backoff';

describe('backoffDelay', () => {
  it('doubles from the base and caps at the maximum', () => {
    const opts = { baseMs: 100, maxMs: 1000 };
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, opts, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('jitters down by at most 20%', () => {
    expect(backoffDelay(0, { baseMs: 100, maxMs: 1000 }, () => 0)).toBe(80);
  });
});

import { KeyCache } from './key-cache';

describe('KeyCache', () => {
  it('answers fresh entries, keeps positive ones as stale fallbacks, and is bounded', () => {
    const c = new KeyCache<string>(100, 1000, 2);
    c.set('a', 'A', 0);
    c.set('n', null, 0);
    expect(c.fresh('a', 50)).toEqual({ value: 'A' });
    expect(c.fresh('n', 50)).toEqual({ value: null });
    expect(c.fresh('a', 100)).toBeUndefined();
    expect(c.stale('a', 999)).toBe('A');
    expect(c.stale('a', 1000)).toBeNull();
    expect(c.stale('n', 10)).toBeNull();
    c.set('b', 'B', 10);
    expect(c.fresh('a', 20)).toBeUndefined();
    expect(c.fresh('b', 20)).toEqual({ value: 'B' });
  });
});

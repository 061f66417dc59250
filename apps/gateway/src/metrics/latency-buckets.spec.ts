import { bucketQuantile, emptyCounts, LATENCY_BOUNDS_MS, NUM_LATENCY_BUCKETS } from './latency-buckets';

describe('bucketQuantile', () => {
  it('interpolates inside the bucket holding the rank', () => {
    const counts = emptyCounts();
    const k = LATENCY_BOUNDS_MS.indexOf(100) + 1; // bucket [100, 150)
    counts[k] = 10;
    expect(bucketQuantile(counts, 0.5)).toBeCloseTo(125, 9);
    expect(bucketQuantile(counts, 1)).toBeCloseTo(150, 9);
  });

  it('walks across buckets and reports the open top bucket by its lower bound', () => {
    const counts = emptyCounts();
    counts[0] = 9; // below 1 ms
    counts[NUM_LATENCY_BUCKETS - 1] = 1; // >= 120 s
    expect(bucketQuantile(counts, 0.5)).toBeCloseTo(0.5 / 0.9, 9);
    expect(bucketQuantile(counts, 0.99)).toBe(120000);
  });

  it('answers null without data and refuses bad input', () => {
    expect(bucketQuantile(emptyCounts(), 0.9)).toBeNull();
    expect(() => bucketQuantile(emptyCounts(), 0)).toThrow(/quantile/);
    expect(() => bucketQuantile([1, 2], 0.5)).toThrow(/bucket counts/);
  });
});

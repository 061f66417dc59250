import { DASHBOARD_HIST_BOUNDS_MS as FROZEN } from '@inlaid/db';
import { bucketValue, emptyHist, HIST_BOUNDS_MS, HIST_BUCKETS, HIST_RELATIVE_ERROR, histBucket, histQuantile } from './log-buckets';

describe('log-spaced latency buckets', () => {
  it('equal the bounds frozen in the migration, span 0.1 ms to 614.3 s, and bound the error under 5%', () => {
    expect([...HIST_BOUNDS_MS]).toEqual(FROZEN);
    expect(HIST_BUCKETS).toBe(166);
    expect(HIST_BOUNDS_MS[HIST_BOUNDS_MS.length - 1]).toBe(614300);
    expect(HIST_RELATIVE_ERROR).toBeGreaterThan(0.047);
    expect(HIST_RELATIVE_ERROR).toBeLessThan(0.05);
  });

  it('finds buckets like width_bucket and reports values within the error of the whole bucket', () => {
    expect(histBucket(0)).toBe(0);
    expect(histBucket(0.1)).toBe(1);
    expect(histBucket(1e9)).toBe(HIST_BUCKETS - 1);
    for (const v of [0.13, 1, 7.7, 150, 999.9, 4321, 600_000]) {
      const k = histBucket(v);
      expect(HIST_BOUNDS_MS[k - 1]).toBeLessThanOrEqual(v);
      expect(HIST_BOUNDS_MS[k]).toBeGreaterThan(v);
      expect(Math.abs(bucketValue(k) / v - 1)).toBeLessThanOrEqual(HIST_RELATIVE_ERROR);
    }
  });

  it('takes the nearest-rank bucket', () => {
    const counts = emptyHist();
    counts[histBucket(10)] = 9;
    counts[histBucket(1000)] = 1;
    expect(histQuantile(counts, 0.9)).toBeCloseTo(bucketValue(histBucket(10)), 9); // rank 9 of 10
    expect(histQuantile(counts, 0.91)).toBeCloseTo(bucketValue(histBucket(1000)), 9); // rank 10
    counts[0] = 10;
    expect(histQuantile(counts, 0.5)).toBe(0.05);
    counts[HIST_BUCKETS - 1] = 100;
    expect(histQuantile(counts, 1)).toBe(614300);
  });

  it('answers null without data and refuses bad input', () => {
    expect(histQuantile(emptyHist(), 0.5)).toBeNull();
    expect(() => histQuantile(emptyHist(), 0)).toThrow(/quantile/);
    expect(() => histQuantile([1, 2], 0.5)).toThrow(/bucket counts/);
  });
});

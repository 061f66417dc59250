/**
 * The latency bucket bounds (ms) of the Prometheus histograms (the version-1 dashboard rollups used them too;
 * the dashboard now uses the finer log-spaced dashboard/log-buckets.ts). Bucket k holds values in
 * [BOUNDS[k-1], BOUNDS[k]); bucket 0 is below BOUNDS[0] and bucket BOUNDS.length is at or above the last bound.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze([
  1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000,
  15000, 20000, 30000, 60000, 120000,
]);

export const NUM_LATENCY_BUCKETS = LATENCY_BOUNDS_MS.length + 1;

/**
 * The q-quantile (0 < q <= 1) of values summarised as bucket counts, interpolated linearly inside the
 * bucket that holds it; null when there are no values. The open top bucket answers with its lower bound.
 */
export function bucketQuantile(counts: readonly number[], q: number, bounds: readonly number[] = LATENCY_BOUNDS_MS): number | null {
  if (!(q > 0 && q <= 1)) throw new RangeError(`quantile must be in (0, 1], got ${q}`);
  if (counts.length !== bounds.length + 1) {
    throw new RangeError(`expected ${bounds.length + 1} bucket counts, got ${counts.length}`);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let k = 0; k < counts.length; k++) {
    const n = counts[k] ?? 0;
    if (n > 0 && seen + n >= rank) {
      const lo = k === 0 ? 0 : (bounds[k - 1] ?? 0);
      if (k === bounds.length) return lo;
      const hi = bounds[k] ?? lo;
      return lo + ((rank - seen) / n) * (hi - lo);
    }
    seen += n;
  }
  return bounds[bounds.length - 1] ?? null;
}

/** Adds `b` into `a` element-wise (both NUM_LATENCY_BUCKETS long). */
export function addCounts(a: number[], b: readonly number[]): number[] {
  for (let k = 0; k < a.length; k++) a[k] = (a[k] ?? 0) + (b[k] ?? 0);
  return a;
}

export function emptyCounts(): number[] {
  return new Array<number>(NUM_LATENCY_BUCKETS).fill(0);
}

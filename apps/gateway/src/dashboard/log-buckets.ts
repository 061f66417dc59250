/**
 * The dashboard's latency histogram buckets (pure): log-spaced bounds 0.1 ms · 1.1^k (k = 0..164, four
 * significant digits, up to 614.3 s), frozen in the 1764500000000-dashboard-fine-rollups migration, whose
 * trigger must use the same ones. Bucket k (Postgres `width_bucket`) holds [BOUNDS[k-1], BOUNDS[k]); bucket 0
 * is [0, 0.1 ms), the last one is at or above 614.3 s.
 *
 * Percentiles take the bucket that holds the nearest-rank sample (rank ceil(q·n), Postgres percentile_disc)
 * and answer 2·lo·hi/(lo+hi), which is within (r-1)/(r+1) of every value in [lo, hi], r = hi/lo <= 1.1007:
 * at most 4.8% relative error from 0.1 ms to 614.3 s, at most 0.05 ms below, and the lower bound above.
 */
export const HIST_BOUNDS_MS: readonly number[] = Object.freeze(
  Array.from({ length: 165 }, (_, k) => Number((0.1 * 1.1 ** k).toPrecision(4))),
);

export const HIST_BUCKETS = HIST_BOUNDS_MS.length + 1;

/** The largest relative error of a percentile inside the log-spaced range (from the bounds themselves). */
export const HIST_RELATIVE_ERROR = HIST_BOUNDS_MS.slice(1).reduce((worst, hi, i) => {
  const lo = HIST_BOUNDS_MS[i] ?? hi;
  return Math.max(worst, (hi - lo) / (hi + lo));
}, 0);

/** Bucket index of a value (ms), as Postgres width_bucket(value, bounds) gives it. */
export function histBucket(valueMs: number): number {
  let lo = 0;
  let hi = HIST_BOUNDS_MS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (valueMs >= (HIST_BOUNDS_MS[mid] ?? Infinity)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The value reported for bucket k (see the module comment). */
export function bucketValue(k: number): number {
  const first = HIST_BOUNDS_MS[0] ?? 0;
  if (k <= 0) return first / 2;
  const lo = HIST_BOUNDS_MS[k - 1] ?? 0;
  const hi = HIST_BOUNDS_MS[k];
  return hi === undefined ? lo : (2 * lo * hi) / (lo + hi);
}

/** The q-quantile (0 < q <= 1) of HIST_BUCKETS bucket counts; null without values. */
export function histQuantile(counts: readonly number[], q: number): number | null {
  if (!(q > 0 && q <= 1)) throw new RangeError(`quantile must be in (0, 1], got ${q}`);
  if (counts.length !== HIST_BUCKETS) throw new RangeError(`expected ${HIST_BUCKETS} bucket counts, got ${counts.length}`);
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let k = 0; k < counts.length; k++) {
    seen += counts[k] ?? 0;
    if (seen >= rank) return bucketValue(k);
  }
  return bucketValue(counts.length - 1);
}

export function emptyHist(): number[] {
  return new Array<number>(HIST_BUCKETS).fill(0);
}

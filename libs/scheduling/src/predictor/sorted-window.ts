/** A sliding window of the last N values kept sorted, so quantiles are O(1) and updates O(N) memmove. */

export class SortedWindow {
  private readonly ring: number[] = [];
  private readonly sorted: number[] = [];
  private next = 0;

  constructor(private readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`window capacity must be a positive integer, got ${capacity}`);
  }

  get size(): number {
    return this.sorted.length;
  }

  push(value: number): void {
    if (this.ring.length < this.capacity) {
      this.ring.push(value);
    } else {
      const old = this.ring[this.next];
      this.ring[this.next] = value;
      this.next = (this.next + 1) % this.capacity;
      this.sorted.splice(lowerBound(this.sorted, old), 1);
    }
    this.sorted.splice(lowerBound(this.sorted, value), 0, value);
  }

  /** Linear-interpolated quantile, q in [0, 1]. Throws on an empty window. */
  quantile(q: number): number {
    const n = this.sorted.length;
    if (n === 0) throw new Error('quantile of an empty window');
    const pos = Math.min(Math.max(q, 0), 1) * (n - 1);
    const i = Math.floor(pos);
    const frac = pos - i;
    return i + 1 < n ? this.sorted[i] * (1 - frac) + this.sorted[i + 1] * frac : this.sorted[i];
  }
}

function lowerBound(xs: readonly number[], v: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Task popularity: p_i proportional to (i + 1)^-alpha (alpha = 0 is uniform), sampled by bisection. */
import { Rng } from './prng';

export class Popularity {
  private readonly cumulative: number[];

  constructor(n: number, readonly alpha: number) {
    if (!(alpha >= 0)) throw new Error(`alpha must be >= 0, got ${alpha}`);
    const w = Array.from({ length: n }, (_, i) => (i + 1) ** -alpha);
    const total = w.reduce((a, b) => a + b, 0);
    let acc = 0;
    this.cumulative = w.map((x) => (acc += x / total));
  }

  probability(i: number): number {
    return this.cumulative[i] - (i > 0 ? this.cumulative[i - 1] : 0);
  }

  sample(rng: Rng): number {
    const u = rng.next();
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cumulative[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

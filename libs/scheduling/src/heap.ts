/** Minimal binary min-heap with a caller-supplied comparator (negative = a comes first). */
export class Heap<T> {
  private readonly items: T[] = [];

  constructor(private readonly before: (a: T, b: T) => number) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const xs = this.items;
    xs.push(item);
    let i = xs.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.before(xs[i], xs[p]) >= 0) break;
      [xs[i], xs[p]] = [xs[p], xs[i]];
      i = p;
    }
  }

  /** Keeps only the items `keep` accepts: O(n). */
  retain(keep: (item: T) => boolean): void {
    const xs = this.items;
    let n = 0;
    for (const x of xs) if (keep(x)) xs[n++] = x;
    xs.length = n;
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  pop(): T | undefined {
    const xs = this.items;
    if (xs.length === 0) return undefined;
    const top = xs[0];
    const last = xs.pop() as T;
    if (xs.length > 0) {
      xs[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(start: number): void {
    const xs = this.items;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < xs.length && this.before(xs[l], xs[m]) < 0) m = l;
      if (r < xs.length && this.before(xs[r], xs[m]) < 0) m = r;
      if (m === i) break;
      [xs[i], xs[m]] = [xs[m], xs[i]];
      i = m;
    }
  }
}

/** Lexicographic comparison of numeric priority keys (smaller = higher priority). */
export function compareKeys(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

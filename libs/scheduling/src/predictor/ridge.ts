/**
 * Ridge regression by normal equations over sparse inputs: accumulates X'X and X'y one example at a
 * time (so it trains online and from a records array alike) and solves (X'X + lambda I) w = X'y by
 * Cholesky. Pure; dense D x D state, so keep D in the hundreds.
 */
import { SparseVector } from './features';

export class RidgeAccumulator {
  private readonly xtx: Float64Array;
  private readonly xty: Float64Array;
  private count = 0;

  constructor(
    readonly dim: number,
    private readonly lambda: number,
  ) {
    if (!(lambda > 0)) throw new Error(`ridge lambda must be > 0, got ${lambda}`);
    this.xtx = new Float64Array(dim * dim);
    this.xty = new Float64Array(dim);
  }

  get n(): number {
    return this.count;
  }

  add(x: SparseVector, y: number): void {
    const { index, value } = x;
    for (let a = 0; a < index.length; a++) {
      const ia = index[a];
      const va = value[a];
      this.xty[ia] += va * y;
      for (let b = 0; b < index.length; b++) this.xtx[ia * this.dim + index[b]] += va * value[b];
    }
    this.count += 1;
  }

  /** Weights minimizing squared error + lambda * |w|^2 (the bias, index 0, is not penalized). */
  solve(): Float64Array {
    const d = this.dim;
    const a = Float64Array.from(this.xtx);
    for (let i = 0; i < d; i++) a[i * d + i] += i === 0 ? 1e-9 : this.lambda;
    return choleskySolve(a, Float64Array.from(this.xty), d);
  }
}

export function dot(w: Float64Array, x: SparseVector): number {
  let s = 0;
  for (let i = 0; i < x.index.length; i++) s += w[x.index[i]] * x.value[i];
  return s;
}

/** Solves A w = b for symmetric positive-definite A (row-major, overwritten with its factor). */
export function choleskySolve(a: Float64Array, b: Float64Array, d: number): Float64Array {
  for (let j = 0; j < d; j++) {
    let s = a[j * d + j];
    for (let k = 0; k < j; k++) s -= a[j * d + k] * a[j * d + k];
    if (!(s > 0)) throw new Error('ridge system is not positive definite');
    const l = Math.sqrt(s);
    a[j * d + j] = l;
    for (let i = j + 1; i < d; i++) {
      let t = a[i * d + j];
      for (let k = 0; k < j; k++) t -= a[i * d + k] * a[j * d + k];
      a[i * d + j] = t / l;
    }
  }
  const y = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    let t = b[i];
    for (let k = 0; k < i; k++) t -= a[i * d + k] * y[k];
    y[i] = t / a[i * d + i];
  }
  const w = new Float64Array(d);
  for (let i = d - 1; i >= 0; i--) {
    let t = y[i];
    for (let k = i + 1; k < d; k++) t -= a[k * d + i] * w[k];
    w[i] = t / a[i * d + i];
  }
  return w;
}

/**
 * Non-negative least squares on the normal equations (Lawson–Hanson active set): minimises
 * ||W^(1/2) (X x - y)||^2 subject to x >= 0, given G = X^T W X and b = X^T W y. Pure and small: meant for
 * the handful of step-cost terms (G is k x k with k <= 8). Columns are rescaled to unit diagonal inside, so
 * terms of very different magnitude (a constant, token counts in the thousands) are handled alike.
 */

/** x >= 0 minimising the quadratic form (G, b); a term with no information (zero diagonal) stays 0. */
export function nnlsNormal(g: readonly (readonly number[])[], b: readonly number[], maxIter = 100): number[] {
  const k = b.length;
  const scale = g.map((row, i) => (row[i] > 0 ? 1 / Math.sqrt(row[i]) : 0));
  const gs = g.map((row, i) => row.map((v, j) => v * scale[i] * scale[j]));
  const bs = b.map((v, i) => v * scale[i]);
  const x = new Array<number>(k).fill(0);
  const passive = new Array<boolean>(k).fill(false);
  const tol = 1e-12 * Math.max(1, ...bs.map(Math.abs));
  for (let iter = 0; iter < maxIter; iter++) {
    const w = gradient(gs, bs, x);
    let t = -1;
    for (let j = 0; j < k; j++) if (!passive[j] && scale[j] > 0 && w[j] > tol && (t < 0 || w[j] > w[t])) t = j;
    if (t < 0) break;
    passive[t] = true;
    for (let inner = 0; inner < maxIter; inner++) {
      const z = solvePassive(gs, bs, passive);
      let alpha = 1;
      let blocked = false;
      for (let j = 0; j < k; j++) {
        if (passive[j] && z[j] <= 0) {
          blocked = true;
          const d = x[j] - z[j];
          if (d > 0) alpha = Math.min(alpha, x[j] / d);
        }
      }
      if (!blocked) {
        for (let j = 0; j < k; j++) x[j] = z[j];
        break;
      }
      for (let j = 0; j < k; j++) {
        x[j] += alpha * (z[j] - x[j]);
        if (passive[j] && x[j] <= 1e-15) {
          passive[j] = false;
          x[j] = 0;
        }
      }
    }
  }
  return x.map((v, i) => Math.max(0, v * scale[i]));
}

function gradient(g: readonly (readonly number[])[], b: readonly number[], x: readonly number[]): number[] {
  return b.map((bi, i) => bi - g[i].reduce((s, gij, j) => s + gij * x[j], 0));
}

/** Unconstrained solution on the passive set (0 elsewhere), by Gaussian elimination with a tiny ridge. */
function solvePassive(g: readonly (readonly number[])[], b: readonly number[], passive: readonly boolean[]): number[] {
  const idx = passive.flatMap((p, i) => (p ? [i] : []));
  const n = idx.length;
  const a = idx.map((i) => [...idx.map((j) => g[i][j] + (i === j ? 1e-10 : 0)), b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r][c]) > Math.abs(a[p][c])) p = r;
    [a[c], a[p]] = [a[p], a[c]];
    const piv = a[c][c];
    if (Math.abs(piv) < 1e-300) continue;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r][c] / piv;
      if (f !== 0) for (let q = c; q <= n; q++) a[r][q] -= f * a[c][q];
    }
  }
  const z = new Array<number>(passive.length).fill(0);
  idx.forEach((i, r) => (z[i] = Math.abs(a[r][r]) < 1e-300 ? 0 : a[r][n] / a[r][r]));
  return z;
}

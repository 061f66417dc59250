/**
 * Remaining output length given a prediction and the tokens already generated, using the
 * uncertainty: the conditional median of L given L > g, read off the piecewise-linear quantile
 * function. At g = 0 this is the plain median; a request that outlives its median is re-estimated
 * from the upper part of the band instead of being treated as "almost done".
 */
import { Prediction, QuantilePoint } from './types';

export function predictedRemaining(p: Prediction, generated: number, quantile = 0.5): number {
  const pts = p.points;
  const last = pts[pts.length - 1];
  if (generated >= last.value) return Math.max(1, Math.ceil(generated * 0.25));
  const f = cdfAt(pts, generated);
  const target = f + (1 - f) * quantile;
  return Math.max(1, quantileAt(pts, target) - generated);
}

/** P(L <= x) by linear interpolation between quantile points. */
export function cdfAt(pts: readonly QuantilePoint[], x: number): number {
  if (x <= pts[0].value) return 0;
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1];
    const b = pts[i];
    if (x <= b.value) return b.value === a.value ? b.q : a.q + ((x - a.value) / (b.value - a.value)) * (b.q - a.q);
  }
  return 1;
}

/** Inverse of `cdfAt`. */
export function quantileAt(pts: readonly QuantilePoint[], q: number): number {
  if (q <= pts[0].q) return pts[0].value;
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1];
    const b = pts[i];
    if (q <= b.q) return b.q === a.q ? b.value : a.value + ((q - a.q) / (b.q - a.q)) * (b.value - a.value);
  }
  return pts[pts.length - 1].value;
}

/**
 * Per-task length distributions. Lognormal and uniform are "given" distributions; `pairs` holds real
 * (prompt, output) length pairs of a task (loaded from JSON by the CLI) and keeps their correlation.
 */
import { Rng } from './prng';

export type LengthDist =
  | { readonly kind: 'lognormal'; readonly median: number; readonly sigma: number; readonly min: number; readonly max: number }
  | { readonly kind: 'uniform'; readonly min: number; readonly max: number };

export interface TaskProfile {
  readonly name: string;
  readonly prompt: LengthDist;
  readonly output: LengthDist;
  /** Output median scales with (prompt / prompt median)^outputPromptExponent (0 = independent). */
  readonly outputPromptExponent: number;
  /** Real (prompt, output) pairs; when present they replace the distributions. */
  readonly pairs?: readonly (readonly [number, number])[];
}

export function sampleLength(d: LengthDist, rng: Rng, medianScale = 1): number {
  switch (d.kind) {
    case 'lognormal': {
      const v = d.median * medianScale * Math.exp(d.sigma * rng.normal());
      return clampInt(v, d.min, d.max);
    }
    case 'uniform':
      return clampInt(rng.uniform(d.min, d.max + 1) * medianScale, d.min, d.max);
  }
}

/** One (prompt, output) draw from a task profile. */
export function sampleTaskLengths(p: TaskProfile, rng: Rng): { promptTokens: number; outputTokens: number } {
  if (p.pairs !== undefined && p.pairs.length > 0) {
    const [promptTokens, outputTokens] = p.pairs[Math.floor(rng.next() * p.pairs.length)];
    return { promptTokens, outputTokens };
  }
  const promptTokens = sampleLength(p.prompt, rng);
  const scale = p.prompt.kind === 'lognormal' ? (promptTokens / p.prompt.median) ** p.outputPromptExponent : 1;
  return { promptTokens, outputTokens: sampleLength(p.output, rng, scale) };
}

function clampInt(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, Math.round(v)));
}

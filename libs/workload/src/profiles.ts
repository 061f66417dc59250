/**
 * Synthetic task profiles: each task gets its own lognormal prompt and output lengths (medians drawn
 * log-uniformly, so tasks differ strongly as in LoRA-Inlaid Fig. 3), with output growing with prompt
 * length. Also builds profiles from real length pairs.
 */
import { TaskProfile } from './distributions';
import { Rng } from './prng';

export interface SyntheticProfileOptions {
  readonly promptMedian: readonly [number, number];
  readonly outputMedian: readonly [number, number];
  readonly sigma: number;
  readonly outputPromptExponent: number;
  readonly maxPrompt: number;
  readonly maxOutput: number;
}

export const DEFAULT_PROFILE_OPTIONS: SyntheticProfileOptions = {
  promptMedian: [32, 1024],
  outputMedian: [8, 400],
  sigma: 0.5,
  outputPromptExponent: 0.5,
  maxPrompt: 4096,
  maxOutput: 2048,
};

export function taskName(i: number, n: number): string {
  return `task-${String(i).padStart(Math.max(3, String(n - 1).length), '0')}`;
}

export function syntheticProfiles(n: number, seed: number, o: SyntheticProfileOptions = DEFAULT_PROFILE_OPTIONS): TaskProfile[] {
  if (!Number.isInteger(n) || n < 1) throw new Error(`task count must be a positive integer, got ${n}`);
  const rng = new Rng(seed ^ 0x5eed);
  const logUniform = ([lo, hi]: readonly [number, number]): number => Math.exp(rng.uniform(Math.log(lo), Math.log(hi)));
  return Array.from({ length: n }, (_, i) => ({
    name: taskName(i, n),
    prompt: { kind: 'lognormal', median: logUniform(o.promptMedian), sigma: o.sigma, min: 4, max: o.maxPrompt },
    output: { kind: 'lognormal', median: logUniform(o.outputMedian), sigma: o.sigma, min: 1, max: o.maxOutput },
    outputPromptExponent: o.outputPromptExponent,
  }));
}

/** Profiles from real per-task length lists: `{ task: [[prompt, output], ...] }`. */
export function profilesFromPairs(lists: Readonly<Record<string, readonly (readonly [number, number])[]>>): TaskProfile[] {
  return Object.entries(lists).map(([name, pairs]) => {
    if (pairs.length === 0) throw new Error(`task "${name}" has no length pairs`);
    for (const p of pairs) {
      if (p.length !== 2 || !p.every((v) => Number.isInteger(v) && v >= 1)) {
        throw new Error(`task "${name}": each entry must be [promptTokens, outputTokens] positive integers`);
      }
    }
    const unused = { kind: 'uniform', min: 1, max: 1 } as const;
    return { name, prompt: unused, output: unused, outputPromptExponent: 0, pairs };
  });
}

/**
 * Trace generator: Gamma-process arrivals (inter-arrival ~ gamma(shape = 1/cv^2, scale = cv^2/rate),
 * S-LoRA's generator), power-law task popularity, per-task lengths. Pure and seeded.
 */
import { sampleTaskLengths, TaskProfile } from './distributions';
import { Popularity } from './popularity';
import { Rng } from './prng';
import { TraceRecord } from './trace';

export interface GeneratorOptions {
  /** Mean requests per second. */
  readonly rate: number;
  /** Coefficient of variation of inter-arrival times (1 = Poisson). */
  readonly cv: number;
  /** Popularity exponent; 0 = uniform. */
  readonly alpha: number;
  readonly durationS: number;
  readonly seed: number;
}

export function generateTrace(profiles: readonly TaskProfile[], o: GeneratorOptions): TraceRecord[] {
  if (profiles.length === 0) throw new Error('generateTrace needs at least one task profile');
  if (!(o.rate > 0)) throw new Error(`rate must be > 0, got ${o.rate}`);
  if (!(o.cv > 0)) throw new Error(`cv must be > 0, got ${o.cv}`);
  if (!(o.durationS > 0)) throw new Error(`duration must be > 0, got ${o.durationS}`);
  const arrivals = new Rng(o.seed);
  const picks = new Rng(o.seed + 0x9e3779b9);
  const lengths = new Rng(o.seed + 0x7f4a7c15);
  const popularity = new Popularity(profiles.length, o.alpha);
  const shape = 1 / (o.cv * o.cv);
  const scale = (o.cv * o.cv) / o.rate;
  const out: TraceRecord[] = [];
  for (let t = arrivals.gamma(shape, scale); t < o.durationS; t += arrivals.gamma(shape, scale)) {
    const p = profiles[popularity.sample(picks)];
    const { promptTokens, outputTokens } = sampleTaskLengths(p, lengths);
    out.push({ arrival_s: t, task: p.name, prompt_tokens: promptTokens, output_tokens: outputTokens });
  }
  return out;
}

/**
 * Prompt features for the learned length predictor (pure): the hashing trick over lower-cased word
 * unigrams and bigrams of the prompt, crossed with the task so each task learns its own word weights,
 * plus per-task intercept and log prompt length. Returned as a sparse vector of (index, value).
 */

export interface SparseVector {
  readonly index: Int32Array;
  readonly value: Float64Array;
}

export const DEFAULT_FEATURE_DIM = 512;
/** Cap on words read from a prompt (the tail of very long prompts adds little and costs time). */
const MAX_WORDS = 400;
const HEAD_WORDS = 8;

/** FNV-1a 32-bit hash. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function words(prompt: string): string[] {
  return (prompt.toLowerCase().match(/[a-z0-9]+|[^\sa-z0-9]/g) ?? []).slice(0, MAX_WORDS);
}

/**
 * Feature vector of one request. Words and bigrams count once each (presence, not frequency), scaled
 * by 1/sqrt(distinct count) so a long prompt's many words do not swamp the model (unscaled presence
 * made xsum's MAE twice the quantile predictor's); hashed indexes collide by design (the ridge penalty
 * absorbs it). The first HEAD_WORDS words also get their own features at a fixed scale. Index 0 is the bias.
 */
export function promptFeatures(task: string, promptTokens: number, prompt: string | undefined, dim = DEFAULT_FEATURE_DIM): SparseVector {
  if (!Number.isInteger(dim) || dim < 8) throw new Error(`feature dim must be an integer >= 8, got ${dim}`);
  const acc = new Map<number, number>();
  const add = (key: string, v: number): void => {
    const i = 1 + (fnv1a(key) % (dim - 1));
    acc.set(i, (acc.get(i) ?? 0) + v);
  };
  const logLen = Math.log1p(Math.max(0, promptTokens));
  acc.set(0, 1);
  add(`t:${task}`, 1);
  add(`tl:${task}`, logLen);
  add('l', logLen);
  const ws = prompt === undefined ? [] : words(prompt);
  const seen = new Set<string>();
  for (let i = 0; i < ws.length; i++) {
    seen.add(`w:${task}:${ws[i]}`);
    if (i > 0) seen.add(`b:${task}:${ws[i - 1]} ${ws[i]}`);
  }
  const scale = seen.size > 0 ? 1 / Math.sqrt(seen.size) : 0;
  for (const key of seen) add(key, scale);
  // The opening words usually carry the instruction ("in one sentence"): unscaled, whatever follows.
  for (let i = 0; i < Math.min(HEAD_WORDS, ws.length); i++) add(`h:${task}:${ws[i]}`, 1 / Math.sqrt(HEAD_WORDS));
  const index = Int32Array.from(acc.keys());
  return { index, value: Float64Array.from(index, (i) => acc.get(i) as number) };
}

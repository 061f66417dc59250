/**
 * Completions' `best_of` (pure): of the best_of candidates generated for a prompt, the n returned are those with
 * the highest log probability per token (OpenAI's definition: the mean of the sampled tokens' logprobs, which are
 * the raw model distribution's, see README "Sampling"). Ties keep the lower candidate index; a candidate without
 * tokens ranks last.
 */
import type { common } from '@inlaid/proto';

/** The mean logprob of the sampled tokens; -Infinity for none. */
export function meanLogprob(tokens: readonly common.TokenLogprob[]): number {
  if (tokens.length === 0) return Number.NEGATIVE_INFINITY;
  return tokens.reduce((sum, t) => sum + (t.sampled?.logprob ?? Number.NEGATIVE_INFINITY), 0) / tokens.length;
}

/** The indices of the `n` best candidates, best first. */
export function bestCandidates(candidates: ReadonlyArray<readonly common.TokenLogprob[]>, n: number): number[] {
  return candidates
    .map((tokens, index) => ({ index, score: meanLogprob(tokens) }))
    .sort((a, b) => b.score - a.score || a.index - b.index) // -Infinity - -Infinity is NaN: falls to the index
    .slice(0, n)
    .map((c) => c.index);
}

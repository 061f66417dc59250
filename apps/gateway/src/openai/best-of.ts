/**
 * `best_of` (pure), shared by HTTP completions and gRPC Generate: its rules (checkBestOf), the candidates it runs
 * (candidatesOf) and their ranking. Of the best_of candidates generated for a prompt, the n returned are those with
 * the highest log probability per token (OpenAI's definition: the mean of the sampled tokens' logprobs, which are
 * the raw model distribution's, see docs/api.md, "Sampling"). Ties keep the lower candidate index; a candidate without
 * tokens ranks last.
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import type { ChoiceDelta } from '../generation/fan-out';
import type { GenerationInput } from '../generation/generation.types';

/**
 * The best_of of a request for n choices: undefined when it is left out or equal to n (plain n choices). Above n it
 * needs a prompt (chat takes best_of only equal to n) and no streaming (the candidates are ranked once all are done);
 * below n it is refused. Every refusal names `best_of`.
 */
export function checkBestOf(n: number, bestOf: number | undefined, on: { chat: boolean; stream: boolean }): number | undefined {
  if (bestOf === undefined || bestOf === n) return undefined;
  if (on.chat) throw InlaidError.invalid(`Only 'best_of' equal to 'n' (${n}) is supported for chat (messages).`, 'best_of');
  if (bestOf < n) throw InlaidError.invalid(`'best_of' (${bestOf}) must be at least 'n' (${n}).`, 'best_of');
  if (on.stream) throw InlaidError.invalid("'best_of' greater than 'n' cannot be used with 'stream' (the candidates are ranked once all are done).", 'best_of');
  return bestOf;
}

/**
 * What runs for n choices and a checked best_of: `count` generations, each with `input`. Ranking best_of candidates
 * needs their sampled tokens' logprobs, so they are asked for whether the client asked or not (the caller drops
 * them from the response when it did not: sampling.logprobs of the client's own input is undefined).
 */
export function candidatesOf(input: GenerationInput, n: number, bestOf: number | undefined): { input: GenerationInput; count: number } {
  if (bestOf === undefined || bestOf <= n) return { input, count: n };
  return { input: { ...input, sampling: { ...input.sampling, logprobs: input.sampling.logprobs ?? 0 } }, count: bestOf };
}

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

/**
 * best_of over the merged deltas of `count` candidates (a stream's shape, e.g. gRPC Generate's): every delta is held
 * until all candidates have ended, then the n best candidates' deltas go out, each candidate's in its own order,
 * renumbered 0..n-1 best first. An error of any candidate ends it before anything goes out.
 */
export async function* rankedChoices(merged: AsyncIterable<ChoiceDelta>, count: number, n: number): AsyncGenerator<ChoiceDelta> {
  const held = Array.from({ length: count }, () => [] as ChoiceDelta['delta'][]);
  for await (const { index, delta } of merged) held[index]?.push(delta);
  const ranked = bestCandidates(held.map((deltas) => deltas.flatMap((d) => d.logprobs ?? [])), n);
  for (const [rank, k] of ranked.entries()) {
    for (const delta of held[k] ?? []) yield { index: rank, delta };
  }
}

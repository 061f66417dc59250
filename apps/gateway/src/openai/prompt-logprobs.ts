/**
 * Prompt logprobs (pure): vLLM's `prompt_logprobs` and completions' `echo` with `logprobs`. The worker scores every
 * prompt token (log_softmax of the raw logits at the position before it, as for generated tokens) when
 * sampling.promptLogprobs is set and sends one entry per prompt token with the request's first tokens: the first
 * entry has no logprob (nothing precedes it), each later one the prompt token (with its rank) and the top N there.
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { optNumber } from './body-fields';
import { charCount, jsonLogprob, type CompletionLogprobs } from './response-shapes';

/** As completions' logprobs and vLLM's max_logprobs. */
export const MAX_PROMPT_LOGPROBS = 20;

/** vLLM's per-token entry: {token id: {logprob, rank, decoded_token}}. */
export interface VllmLogprob {
  logprob: number;
  rank: number;
  decoded_token: string;
}

export type VllmPromptLogprobs = Array<Record<string, VllmLogprob> | null>;

/**
 * `prompt_logprobs` (0..MAX_PROMPT_LOGPROBS; null = off). As vLLM, not with `stream` (the prompt's logprobs are
 * only in non-streamed responses; completions' `echo` with `logprobs` streams them in the first chunk).
 */
export function parsePromptLogprobs(body: Record<string, unknown>, stream: boolean): number | undefined {
  const k = optNumber(body, 'prompt_logprobs', 0, MAX_PROMPT_LOGPROBS, true);
  if (k !== undefined && stream) {
    throw InlaidError.invalid("'prompt_logprobs' is not available when 'stream' is true (use 'echo' with 'logprobs' to stream them).", 'prompt_logprobs');
  }
  return k;
}

/** The top N the worker must send: enough for prompt_logprobs and for echo's logprobs. */
export function workerPromptLogprobs(promptLogprobs: number | undefined, echoLogprobs: number | undefined): number | undefined {
  if (promptLogprobs === undefined) return echoLogprobs;
  return echoLogprobs === undefined ? promptLogprobs : Math.max(promptLogprobs, echoLogprobs);
}

/**
 * vLLM's `prompt_logprobs`: null for the first prompt token, then per token a dict of the prompt token (its rank)
 * and the top `k` (ranks 1..k), keyed by token id.
 */
export function vllmPromptLogprobs(entries: readonly common.TokenLogprob[], k: number): VllmPromptLogprobs {
  return entries.map((t, i) => {
    const sampled = t.sampled;
    if (i === 0 || sampled === undefined || sampled.rank === undefined) return null;
    const out: Record<string, VllmLogprob> = {
      [String(sampled.tokenId)]: { logprob: jsonLogprob(sampled.logprob), rank: sampled.rank, decoded_token: sampled.token },
    };
    t.top.slice(0, k).forEach((e, j) => {
      const key = String(e.tokenId);
      if (!(key in out)) out[key] = { logprob: jsonLogprob(e.logprob), rank: j + 1, decoded_token: e.token };
    });
    return out;
  });
}

/**
 * Completions' logprobs object for the echoed prompt: one entry per prompt token, the first with a null logprob
 * and null top_logprobs, each later one with the top `k` plus the token itself (as generated tokens'). text_offset
 * accumulates the tokens' own text from 0; the generated tokens then start at the echoed prompt's length.
 */
export function echoPromptLogprobs(entries: readonly common.TokenLogprob[], k: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = 0;
  entries.forEach((t, i) => {
    const sampled = t.sampled;
    if (sampled === undefined) return;
    out.tokens.push(sampled.token);
    out.text_offset.push(at);
    at += charCount(sampled.token);
    if (i === 0 || sampled.rank === undefined) {
      out.token_logprobs.push(null);
      out.top_logprobs.push(null);
      return;
    }
    out.token_logprobs.push(jsonLogprob(sampled.logprob));
    const top = new Map<string, number>();
    for (const e of [...t.top.slice(0, k), sampled]) if (!top.has(e.token)) top.set(e.token, jsonLogprob(e.logprob));
    out.top_logprobs.push(Object.fromEntries(top));
  });
  return out;
}

/** The prompt's logprobs object followed by the generated tokens'. */
export function concatLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

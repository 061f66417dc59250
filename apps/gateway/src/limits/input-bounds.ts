/**
 * Size bounds for everything a client sends, checked at the edge before any worker or database sees it
 * (pure). The worker still checks the prompt in tokens against its model length; these bounds stop huge
 * inputs from costing tokenizer time or memory first.
 */
import { InlaidError } from '../common/inlaid-error';

export const BOUNDS = {
  bodyBytes: 1 << 20, // HTTP body limit (413 above it)
  promptChars: 256 * 1024,
  messages: 256,
  maxTokens: 32_768,
  stopSequences: 4,
  stopChars: 256,
  stopTokenIds: 64,
  modelChars: 128,
  topK: 100_000,
  /**
   * Generated-token logprob entries (choices x tokens x (top N + 1)) a non-streamed response holds until its end:
   * ~315 bytes each as TokenLogprob objects (6.6 KB a token with 20 top), so ~0.3 GB at most. The order of the
   * worker's prompt-logprobs cap (MAX_PROMPT_LOGPROB_ENTRIES, engine.py); a stream holds one chunk, so is not bounded.
   */
  logprobEntries: 1_000_000,
} as const;

/** Model ids are task names or a base model id such as `HuggingFaceTB/SmolLM2-135M-Instruct`. */
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/;

export function checkModelId(model: string, param = 'model'): void {
  if (model.length > BOUNDS.modelChars || !MODEL_ID.test(model)) {
    throw InlaidError.invalid(`'${param}' must be at most ${BOUNDS.modelChars} characters of [A-Za-z0-9._:/-].`, param);
  }
}

/** Where a left-out max_tokens is named and how far it reaches: the served model's length, asked only when needed. */
export interface UnsetMax {
  param: string;
  modelLen: () => number | undefined;
}

/**
 * A non-streamed response (or gRPC best_of's ranking) keeps every generated token's logprobs of every choice until
 * the end: refused when choices x max_tokens x (top + 1) exceeds BOUNDS.logprobEntries. maxTokens 0 (left out)
 * counts as what the worker then generates (unsetMaxTokens of `unset`'s model length; BOUNDS.maxTokens without it),
 * and the refusal asks to set `unset.param`.
 */
export function checkLogprobEntries(choices: number, maxTokens: number, top: number, param: string, unset?: UnsetMax): void {
  const left = maxTokens === 0;
  const tokens = left ? unsetMaxTokens(unset?.modelLen()) : maxTokens;
  const entries = choices * tokens * (top + 1);
  if (entries > BOUNDS.logprobEntries) {
    const advice = left && unset !== undefined ? `set '${unset.param}' (left out, up to ${tokens} tokens)` : 'fewer max tokens';
    throw InlaidError.invalid(
      `${choices} choice(s) x ${tokens} max tokens x ${top + 1} logprobs a token is ${entries} entries, more than ` +
        `${BOUNDS.logprobEntries} for a non-streamed response: ask for fewer '${param}', fewer choices or ${advice}, or stream.`,
      param,
    );
  }
}

/**
 * The most tokens a request that leaves max_tokens out may generate, as the worker counts it: up to the model's length
 * less the prompt (workers engine.py), with no BOUNDS.maxTokens limit, so the model's length less one (the prompt has
 * at least one token) when known. Where it is not known, BOUNDS.maxTokens (an undercount for longer models).
 */
export function unsetMaxTokens(maxModelLen: number | undefined): number {
  if (maxModelLen === undefined || !Number.isInteger(maxModelLen) || maxModelLen < 2) return BOUNDS.maxTokens;
  return maxModelLen - 1;
}

/** Any lone surrogate (in `u` mode a surrogate pair is one code point, which \p{Cs} does not match). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Strings must be well-formed UTF-16 (String.prototype.isWellFormed): protobuf encodes a lone surrogate as U+FFFD,
 * so the worker would see another text (a stop sequence would match any replacement character).
 */
export function checkWellFormed(text: string, param: string): void {
  if (LONE_SURROGATE.test(text)) {
    throw InlaidError.invalid(`'${param}' is not well-formed UTF-16: it has a lone surrogate (an unpaired \\uD800-\\uDFFF escape).`, param);
  }
}

export function checkPromptChars(total: number, param: string): void {
  if (total > BOUNDS.promptChars) {
    throw InlaidError.invalid(`'${param}' is too long: ${total} characters, the limit is ${BOUNDS.promptChars}.`, param);
  }
}

export function checkStops(stop: readonly string[], stopTokenIds: readonly number[], param: string): void {
  if (stop.length > BOUNDS.stopSequences) throw InlaidError.invalid(`'${param}' accepts at most ${BOUNDS.stopSequences} sequences.`, param);
  if (stop.some((s) => s.length > BOUNDS.stopChars)) {
    throw InlaidError.invalid(`Each '${param}' sequence must be at most ${BOUNDS.stopChars} characters.`, param);
  }
  for (const s of stop) checkWellFormed(s, param);
  if (stopTokenIds.length > BOUNDS.stopTokenIds) {
    throw InlaidError.invalid(`'stop_token_ids' accepts at most ${BOUNDS.stopTokenIds} ids.`, 'stop_token_ids');
  }
  if (stopTokenIds.some((i) => !Number.isInteger(i) || i < 0 || i > 0x7fffffff)) {
    throw InlaidError.invalid("'stop_token_ids' must be non-negative 32-bit integers.", 'stop_token_ids');
  }
}

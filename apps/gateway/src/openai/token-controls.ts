/**
 * logit_bias (OpenAI), min_p and min_tokens (vLLM): parsed from an HTTP body, or checked on a gRPC
 * SamplingParams (pure; INVALID_ARGUMENT naming the parameter). The worker checks logit_bias ids against its
 * vocabulary (its refusal names `logit_bias`: common/inlaid-error.ts).
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { BOUNDS } from '../limits/input-bounds';
import { isPresent, optNumber } from './body-fields';

/** OpenAI's limits: at most 300 entries, each bias in [-100, 100]. */
export const MAX_LOGIT_BIAS_ENTRIES = 300;
export const MAX_LOGIT_BIAS = 100;
const MAX_TOKEN_ID = 0xffff_ffff; // uint32 on the wire
const TOKEN_ID_KEY = /^(0|[1-9][0-9]*)$/;

type TokenControls = Pick<common.SamplingParams, 'logitBias' | 'minP' | 'minTokens'>;

function checkBias(id: number, bias: unknown, param: string): number {
  if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -MAX_LOGIT_BIAS || bias > MAX_LOGIT_BIAS) {
    throw InlaidError.invalid(`'${param}' values must be numbers between -${MAX_LOGIT_BIAS} and ${MAX_LOGIT_BIAS} (token ${id}).`, param);
  }
  return bias;
}

function checkEntries(count: number, param: string): void {
  if (count > MAX_LOGIT_BIAS_ENTRIES) {
    throw InlaidError.invalid(`'${param}' accepts at most ${MAX_LOGIT_BIAS_ENTRIES} entries, got ${count}.`, param);
  }
}

/** `logit_bias`: {"<token id>": bias}; null or {} = none. */
function parseLogitBias(raw: unknown): common.LogitBias | undefined {
  if (!isPresent(raw)) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw InlaidError.invalid("'logit_bias' must be an object mapping token ids to biases.", 'logit_bias');
  }
  const entries = Object.entries(raw as Record<string, unknown>);
  checkEntries(entries.length, 'logit_bias');
  if (entries.length === 0) return undefined;
  const bias: Record<number, number> = {};
  for (const [key, value] of entries) {
    const id = Number(key);
    if (!TOKEN_ID_KEY.test(key) || id > MAX_TOKEN_ID) {
      throw InlaidError.invalid(`'logit_bias' keys must be token ids (non-negative integers), got ${JSON.stringify(key)}.`, 'logit_bias');
    }
    bias[id] = checkBias(id, value, 'logit_bias');
  }
  return { bias };
}

/**
 * The three fields of an HTTP body; `maxTokens` is the request's max_tokens (0 = unset), which min_tokens may
 * not exceed. A value that turns a control off (min_p 0, min_tokens 0, an empty logit_bias) leaves it unset.
 */
export function parseTokenControls(body: Record<string, unknown>, maxTokens: number, maxParam: string): TokenControls {
  const minP = optNumber(body, 'min_p', 0, 1);
  const minTokens = optNumber(body, 'min_tokens', 0, BOUNDS.maxTokens, true);
  if (minTokens !== undefined && maxTokens > 0 && minTokens > maxTokens) {
    throw InlaidError.invalid(`'min_tokens' (${minTokens}) must not exceed '${maxParam}' (${maxTokens}).`, 'min_tokens');
  }
  return {
    logitBias: parseLogitBias(body['logit_bias']),
    minP: minP === 0 ? undefined : minP,
    minTokens: minTokens === 0 ? undefined : minTokens,
  };
}

/** The same bounds on a client gRPC SamplingParams (fields named `sampling.<field>`). */
export function checkTokenControls(p: common.SamplingParams): void {
  const bias = Object.entries(p.logitBias?.bias ?? {});
  checkEntries(bias.length, 'sampling.logit_bias');
  for (const [id, value] of bias) checkBias(Number(id), value, 'sampling.logit_bias');
  if (p.minP !== undefined && !(Number.isFinite(p.minP) && p.minP >= 0 && p.minP <= 1)) {
    throw InlaidError.invalid(`sampling.min_p must be between 0 and 1, got ${p.minP}.`, 'sampling.min_p');
  }
  const minTokens = p.minTokens ?? 0;
  if (!Number.isInteger(minTokens) || minTokens < 0 || minTokens > BOUNDS.maxTokens) {
    throw InlaidError.invalid(`sampling.min_tokens must be between 0 and ${BOUNDS.maxTokens}, got ${minTokens}.`, 'sampling.min_tokens');
  }
  if (p.maxTokens > 0 && minTokens > p.maxTokens) {
    throw InlaidError.invalid(`sampling.min_tokens (${minTokens}) must not exceed sampling.max_tokens (${p.maxTokens}).`, 'sampling.min_tokens');
  }
}

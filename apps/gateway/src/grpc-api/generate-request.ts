/** Validates a client gRPC GenerateRequest into a GenerationInput (pure; INVALID_ARGUMENT naming the field). */
import type { common, inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { MAX_CHOICES } from '../generation/fan-out';
import type { GenerationInput } from '../generation/generation.types';
import { BOUNDS, checkLogprobEntries, checkModelId, checkPromptChars, checkStops } from '../limits/input-bounds';
import { checkBestOf } from '../openai/best-of';
import { CHAT_ROLES, MAX_LOGPROBS, MAX_REPETITION_PENALTY, MIN_POSITIVE } from '../openai/request-validation';
import { checkResponseFormat } from '../openai/response-format';
import { checkTokenControls } from '../openai/token-controls';
import { SANE_ID } from '../logging/request-context';

const MAX_REQUEST_ID = 128; // = SANE_ID's bound (logging/request-context)

/** `shown`: the bound as the message names it (MIN_POSITIVE for its float32 MIN_POSITIVE_F32). */
function checkRange(name: string, v: number | undefined, min: number, max: number, shown = min): void {
  if (v !== undefined && !(Number.isFinite(v) && v >= min && v <= max)) {
    throw InlaidError.invalid(`sampling.${name} must be between ${shown} and ${max}, got ${v}.`, `sampling.${name}`);
  }
}

/** MIN_POSITIVE as the float32 the field arrives as (1e-6 itself decodes to 9.99999997e-7). */
const MIN_POSITIVE_F32 = Math.fround(MIN_POSITIVE);

/**
 * The client's sampling, checked. keep_tool_markers is the gateway's own (generate-tools.ts sets it for a tools plan
 * whose parser needs the markers): a client's is dropped, so plain text never carries the format's special tokens.
 */
function sampling(s: common.SamplingParams | undefined): common.SamplingParams {
  const p: common.SamplingParams = { ...(s ?? { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false }) };
  delete p.keepToolMarkers;
  checkRange('temperature', p.temperature, 0, 2);
  if (p.temperature !== undefined && p.temperature > 0 && p.temperature < MIN_POSITIVE_F32) {
    throw InlaidError.invalid(`sampling.temperature must be 0 or between ${MIN_POSITIVE} and 2, got ${p.temperature}.`, 'sampling.temperature');
  }
  checkRange('top_p', p.topP, MIN_POSITIVE_F32, 1, MIN_POSITIVE);
  if (p.stop.some((x) => x === '')) throw InlaidError.invalid('sampling.stop must not contain empty strings.', 'sampling.stop');
  checkStops(p.stop, p.stopTokenIds, 'sampling.stop');
  if (!Number.isInteger(p.maxTokens) || p.maxTokens < 0 || p.maxTokens > BOUNDS.maxTokens) {
    throw InlaidError.invalid(`sampling.max_tokens must be between 0 and ${BOUNDS.maxTokens}.`, 'sampling.max_tokens');
  }
  if (p.topK !== undefined && (p.topK < 0 || p.topK > BOUNDS.topK)) {
    throw InlaidError.invalid(`sampling.top_k must be between 0 and ${BOUNDS.topK}.`, 'sampling.top_k');
  }
  checkRange('presence_penalty', p.presencePenalty, -2, 2);
  checkRange('frequency_penalty', p.frequencyPenalty, -2, 2);
  checkRange('repetition_penalty', p.repetitionPenalty, MIN_POSITIVE_F32, MAX_REPETITION_PENALTY, MIN_POSITIVE);
  checkRange('logprobs', p.logprobs, 0, MAX_LOGPROBS);
  checkRange('prompt_logprobs', p.promptLogprobs, 0, MAX_LOGPROBS);
  checkResponseFormat(p.responseFormat);
  checkTokenControls(p);
  return p;
}

/** Choices the request asks for: `n` unset or 0 means 1; at most MAX_CHOICES. */
export function choiceCount(req: inference.GenerateRequest): number {
  const n = req.n ?? 0;
  if (!Number.isInteger(n) || n < 0 || n > MAX_CHOICES) throw InlaidError.invalid(`n must be between 0 and ${MAX_CHOICES}, got ${n}.`, 'n');
  return Math.max(1, n);
}

/**
 * The choices returned (`n`) and, when above n, the best_of candidates generated and ranked down to them: best_of
 * unset or 0 is n; otherwise HTTP completions' rules (openai/best-of.ts checkBestOf), a prompt only. A gRPC stream
 * is not refused: its messages wait for the ranking, so every candidate's logprobs are held (checkRankedLogprobs).
 * `maxModelLen`: the served model's length where the caller knows it (what an unset max_tokens generates up to).
 */
export function choicePlan(req: inference.GenerateRequest, maxModelLen?: number): { n: number; bestOf?: number } {
  const n = choiceCount(req);
  const raw = req.bestOf ?? 0;
  if (!Number.isInteger(raw) || raw < 0 || raw > MAX_CHOICES) {
    throw InlaidError.invalid(`best_of must be between 0 and ${MAX_CHOICES}, got ${raw}.`, 'best_of');
  }
  const bestOf = checkBestOf(n, raw === 0 ? undefined : raw, { chat: req.messages.length > 0, stream: false });
  if (bestOf === undefined) return { n };
  checkRankedLogprobs(bestOf, req.sampling, maxModelLen);
  return { n, bestOf };
}

/**
 * best_of ranks its candidates at the end, so every candidate's token logprobs are held until then (the sampled
 * token's at least: best-of.ts candidatesOf turns them on), as in a non-streamed REST response: the same cap
 * (input-bounds.ts checkLogprobEntries). max_tokens 0 (unset) counts as what the worker then generates, the model's
 * length less one (input-bounds.ts unsetMaxTokens). Where the caller does not pass the length it counts as
 * BOUNDS.maxTokens, which undercounts a model longer than 32,768 tokens: callers that can look the model up should.
 */
function checkRankedLogprobs(bestOf: number, s: common.SamplingParams | undefined, maxModelLen: number | undefined): void {
  const maxTokens = s?.maxTokens ?? 0;
  const top = s?.logprobs ?? 0;
  checkLogprobEntries(bestOf, maxTokens, top, 'sampling.logprobs', { param: 'sampling.max_tokens', modelLen: () => maxModelLen });
}

/**
 * `developer` turns as `system` ones, as REST chat maps them (openai/request-validation.ts parseMessages): chat
 * templates know `system`, so the same conversation renders the same over both APIs.
 */
export function grpcMessages(messages: readonly common.ChatMessage[]): common.ChatMessage[] {
  return messages.map((m) => (m.role === 'developer' ? { ...m, role: 'system' } : m));
}

export function toGenerationInput(req: inference.GenerateRequest): GenerationInput {
  if (req.model.trim() === '') throw InlaidError.invalid('model is required.', 'model');
  checkModelId(req.model);
  if (req.messages.length > BOUNDS.messages) throw InlaidError.invalid(`messages accepts at most ${BOUNDS.messages} messages.`, 'messages');
  checkPromptChars(req.prompt.length + req.messages.reduce((n, m) => n + m.content.length + m.role.length, 0), 'prompt');
  const hasPrompt = req.prompt !== '';
  const hasMessages = req.messages.length > 0;
  if (hasPrompt === hasMessages) throw InlaidError.invalid('Set exactly one of prompt or messages.', 'prompt');
  req.messages.forEach((m, i) => {
    if (!CHAT_ROLES.has(m.role)) {
      throw InlaidError.invalid(`messages[${i}].role must be one of ${[...CHAT_ROLES].join(', ')}.`, `messages[${i}].role`);
    }
  });
  if (req.requestId !== '' && !SANE_ID.test(req.requestId)) {
    throw InlaidError.invalid(`request_id must be 1 to ${MAX_REQUEST_ID} characters of A-Z a-z 0-9 . _ : / -.`, 'request_id');
  }
  return {
    model: req.model,
    prompt: req.prompt,
    messages: grpcMessages(req.messages),
    sampling: sampling(req.sampling),
    api: 'grpc',
    requestId: req.requestId === '' ? undefined : req.requestId,
    // unset: the worker's default (vLLM's: true for a prompt, false for messages), as HTTP chat completions leaves it
    ...(req.addSpecialTokens === undefined ? {} : { addSpecialTokens: req.addSpecialTokens }),
  };
}

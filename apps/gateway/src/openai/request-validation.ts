/**
 * Pure validation of OpenAI completion / chat-completion bodies into a GenerationInput. Every rejection is
 * an InlaidError(INVALID_ARGUMENT) naming the parameter. Unknown fields are ignored, as vLLM does (OpenAI refuses them);
 * completions refuse the chat-only tool fields (refuseChatOnly).
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import type { Api, GenerationInput } from '../generation/generation.types';
import { MAX_CHOICES } from '../generation/fan-out';
import { BOUNDS, checkLogprobEntries, checkModelId, checkPromptChars, checkStops, checkWellFormed, type UnsetMax } from '../limits/input-bounds';
import { checkBestOf } from './best-of';
import { isObject, isPresent, optBoolean, optNumber } from './body-fields';
import { parsePromptLogprobs, workerPromptLogprobs } from './prompt-logprobs';
import { parseResponseFormat } from './response-format';
import { parseTurnTools } from './tool-history';
import { parseTokenControls } from './token-controls';
import { HERMES_FALLBACK, type ToolSupport } from './tool-format';
import { nativeTools, renderChat, toolCallChars, type ChatTurn } from './tool-prompt';
import { keepsToolMarkers, toolResponseFormat } from './tool-schema';
import { parseToolPlan, type ToolPlan } from './tools';

export interface OpenAIRequest {
  readonly input: GenerationInput;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** Choices to generate (1..MAX_CHOICES); each runs as its own request (generation/fan-out.ts). */
  readonly n: number;
  /** Chat with tools offered (tools.ts): the output is parsed for tool calls. */
  readonly tools?: ToolPlan;
  /**
   * Completions' `best_of` when above `n`: that many candidates are generated (with logprobs) and the n with the
   * highest mean token logprob are returned (openai/best-of.ts). Never with `stream`.
   */
  readonly bestOf?: number;
  /** Completions' `echo`: this text (the prompt) goes before each choice's text (with `logprobs`: its logprobs too). */
  readonly echo?: string;
  /** vLLM's `prompt_logprobs` (0..20): completions' choices / the chat response carry `prompt_logprobs`. */
  readonly promptLogprobs?: number;
}

/** Top alternatives per token, as vLLM's default max_logprobs (completions' `logprobs`, chat's `top_logprobs`). */
export const MAX_LOGPROBS = 20;
/** vLLM has no upper bound on repetition_penalty; this one keeps it finite and sane. */
export const MAX_REPETITION_PENALTY = 100;
/**
 * Least positive temperature, top_p and repetition_penalty. The worker gets them as protobuf floats, where a
 * smaller value can round to 0 (or a denormal) and be refused there (top_p, repetition_penalty: (0, ...]) or
 * silently turn greedy (temperature). vLLM refuses repetition_penalty <= 0 and top_p <= 0 and raises a
 * temperature under 0.01 to 0.01; the gateway refuses, naming the parameter, instead of changing the value.
 */
export const MIN_POSITIVE = 1e-6;

type Body = Record<string, unknown>;
export const CHAT_ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

/** The body itself (no param), or a nested value named by `param` (messages[i], stream_options). */
function asObject(value: unknown, param?: string): Body {
  if (isObject(value)) return value;
  if (param === undefined) throw InlaidError.invalid('The request body must be a JSON object.');
  throw InlaidError.invalid(`'${param}' must be a JSON object.`, param);
}

function parseModel(body: Body): string {
  const model = body['model'];
  if (typeof model !== 'string' || model.trim() === '') throw InlaidError.invalid("'model' is required.", 'model');
  checkModelId(model);
  return model;
}

function parseStop(body: Body): string[] {
  const stop = body['stop'];
  if (!isPresent(stop)) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string' || s === '')) {
    throw InlaidError.invalid("'stop' must be a non-empty string or a list of non-empty strings.", 'stop');
  }
  checkStops(list as string[], [], 'stop');
  return list as string[];
}

function parseStopTokenIds(body: Body): number[] {
  const ids = body['stop_token_ids'];
  if (!isPresent(ids)) return [];
  if (!Array.isArray(ids) || ids.some((i) => !Number.isInteger(i) || (i as number) < 0)) {
    throw InlaidError.invalid("'stop_token_ids' must be a list of non-negative integers.", 'stop_token_ids');
  }
  checkStops([], ids as number[], 'stop');
  return ids as number[];
}

/**
 * `n` (1..MAX_CHOICES) and `best_of` (n..MAX_CHOICES; completions only, chat only takes it equal to n; best-of.ts
 * checkBestOf, shared with gRPC). best_of above n ranks candidates server-side, which OpenAI does not stream either.
 */
function parseChoices(body: Body, api: Api, stream: boolean): { n: number; bestOf?: number } {
  const n = optNumber(body, 'n', 1, MAX_CHOICES, true) ?? 1;
  const bestOf = checkBestOf(n, optNumber(body, 'best_of', 1, MAX_CHOICES, true), { chat: api !== 'completions', stream });
  return bestOf === undefined ? { n } : { n, bestOf };
}

/**
 * Completions' `echo`: the prompt goes before each choice's text. With `logprobs`, the worker scores the prompt
 * tokens too (sampling.promptLogprobs) and the logprobs object starts with them (openai/prompt-logprobs.ts).
 */
function parseEcho(body: Body, api: Api, prompt: string): string | undefined {
  const echo = optBoolean(body, 'echo') ?? false;
  if (!echo) return undefined;
  if (api !== 'completions') throw InlaidError.invalid("'echo' is only supported on /v1/completions.", 'echo');
  return prompt;
}

/** Completions: `logprobs` is an integer 0..MAX_LOGPROBS (null or false = off). */
function parseCompletionLogprobs(body: Body): number | undefined {
  if (body['logprobs'] === false) return undefined;
  return optNumber(body, 'logprobs', 0, MAX_LOGPROBS, true);
}

/** Chat: `logprobs` is a boolean; `top_logprobs` (0..MAX_LOGPROBS) needs it true. */
function parseChatLogprobs(body: Body): number | undefined {
  const on = optBoolean(body, 'logprobs') ?? false;
  const top = optNumber(body, 'top_logprobs', 0, MAX_LOGPROBS, true);
  if (top !== undefined && !on) throw InlaidError.invalid("'top_logprobs' needs 'logprobs' set to true.", 'top_logprobs');
  return on ? (top ?? 0) : undefined;
}

/** temperature: 0 (greedy) or MIN_POSITIVE..2. */
function parseTemperature(body: Body): number | undefined {
  const t = optNumber(body, 'temperature', 0, 2);
  if (t !== undefined && t > 0 && t < MIN_POSITIVE) {
    throw InlaidError.invalid(`'temperature' must be 0 or between ${MIN_POSITIVE} and 2, got ${t}.`, 'temperature');
  }
  return t;
}

/** Penalties; a value that turns a penalty off (0, or 1 for repetition) leaves the field unset. */
function parsePenalties(body: Body): Pick<common.SamplingParams, 'presencePenalty' | 'frequencyPenalty' | 'repetitionPenalty'> {
  const presence = optNumber(body, 'presence_penalty', -2, 2);
  const frequency = optNumber(body, 'frequency_penalty', -2, 2);
  const repetition = optNumber(body, 'repetition_penalty', MIN_POSITIVE, MAX_REPETITION_PENALTY);
  return {
    presencePenalty: presence === 0 ? undefined : presence,
    frequencyPenalty: frequency === 0 ? undefined : frequency,
    repetitionPenalty: repetition === 1 ? undefined : repetition,
  };
}

function parseSampling(body: Body, maxTokensParam: string, logprobs: number | undefined): common.SamplingParams {
  // both checked when both are given (chat's max_completion_tokens wins), so a bad max_tokens is never hidden
  const preferred = optNumber(body, maxTokensParam, 1, BOUNDS.maxTokens, true);
  const maxTokens = preferred ?? optNumber(body, 'max_tokens', 1, BOUNDS.maxTokens, true);
  if (preferred !== undefined) optNumber(body, 'max_tokens', 1, BOUNDS.maxTokens, true);
  const seed = optNumber(body, 'seed', 0, Number.MAX_SAFE_INTEGER, true);
  const topK = optNumber(body, 'top_k', -1, BOUNDS.topK, true);
  const maxName = isPresent(body[maxTokensParam]) ? maxTokensParam : 'max_tokens';
  return {
    maxTokens: maxTokens ?? 0,
    temperature: parseTemperature(body),
    topP: optNumber(body, 'top_p', MIN_POSITIVE, 1),
    topK: topK !== undefined && topK > 0 ? topK : undefined,
    seed,
    stop: parseStop(body),
    stopTokenIds: parseStopTokenIds(body),
    ignoreEos: optBoolean(body, 'ignore_eos') ?? false,
    ...parsePenalties(body),
    logprobs,
    responseFormat: parseResponseFormat(body),
    ...parseTokenControls(body, maxTokens ?? 0, maxName),
  };
}

function parseStreaming(body: Body): { stream: boolean; includeUsage: boolean } {
  const stream = optBoolean(body, 'stream') ?? false;
  const options = body['stream_options'];
  if (!isPresent(options)) return { stream, includeUsage: false };
  if (!stream) throw InlaidError.invalid("'stream_options' is only allowed when 'stream' is true.", 'stream_options');
  const opts = asObject(options, 'stream_options');
  return { stream, includeUsage: optBoolean(opts, 'include_usage') ?? false };
}

function parsePrompt(body: Body): string {
  const prompt = body['prompt'];
  const one = typeof prompt === 'string' ? prompt : Array.isArray(prompt) && prompt.length === 1 ? prompt[0] : undefined;
  if (typeof one === 'string') {
    checkPromptChars(one.length, 'prompt');
    checkWellFormed(one, 'prompt');
    return one;
  }
  if (Array.isArray(prompt) && prompt.length > 1) throw InlaidError.invalid("Only one 'prompt' per request is supported.", 'prompt');
  throw InlaidError.invalid("'prompt' must be a string.", 'prompt');
}

function messageContent(content: unknown, index: number): string {
  const text = contentText(content, index);
  checkWellFormed(text, `messages[${index}].content`);
  return text;
}

function contentText(content: unknown, index: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content
      .map((part: unknown) => {
        const p = part as { type?: unknown; text?: unknown };
        if (p?.type !== 'text' || typeof p.text !== 'string') {
          throw InlaidError.invalid(`messages[${index}].content: only text parts are supported.`, `messages[${index}].content`);
        }
        return p.text;
      })
      .join('');
  }
  throw InlaidError.invalid(`messages[${index}].content must be a string or a list of text parts.`, `messages[${index}].content`);
}

function parseMessages(body: Body): ChatTurn[] {
  const messages = body['messages'];
  if (!Array.isArray(messages) || messages.length === 0) {
    throw InlaidError.invalid("'messages' must be a non-empty list.", 'messages');
  }
  if (messages.length > BOUNDS.messages) throw InlaidError.invalid(`'messages' accepts at most ${BOUNDS.messages} messages.`, 'messages');
  const callIds = new Set<string>();
  return messages.map((m: unknown, i) => {
    const msg = asObject(m, `messages[${i}]`);
    const role = msg['role'];
    if (typeof role !== 'string' || !CHAT_ROLES.has(role)) {
      throw InlaidError.invalid(`messages[${i}].role must be one of ${[...CHAT_ROLES].join(', ')}.`, `messages[${i}].role`);
    }
    return { role: role === 'developer' ? 'system' : role, content: messageContent(msg['content'], i), ...parseTurnTools(msg, i, role, callIds) };
  });
}

/**
 * The messages the worker gets: tools offered per `plan` and the tool-call history rendered (tool-prompt.ts),
 * or, when the model's template renders them itself, the messages with their tool fields and the tools apart.
 */
function chatMessages(body: Body, plan: ToolPlan | undefined, support: ToolSupport): { messages: common.ChatMessage[]; tools: string } {
  const messages = renderChat(parseMessages(body), plan, support);
  const tools = nativeTools(plan, support);
  checkPromptChars(messages.reduce((n, m) => n + m.content.length, 0) + toolCallChars(messages) + tools.length, 'messages');
  return { messages, tools };
}

/**
 * `required` / a named function: the output is constrained to a call; response_format cannot be used too. `auto`:
 * free text, with the format's markers kept where the worker would drop them (tool-schema.ts keepsToolMarkers).
 */
function withTools(req: OpenAIRequest, plan: ToolPlan): OpenAIRequest {
  const format = toolResponseFormat(plan);
  if (format === undefined) {
    const sampling = keepsToolMarkers(plan) ? { ...req.input.sampling, keepToolMarkers: true } : req.input.sampling;
    return { ...req, input: { ...req.input, sampling }, tools: plan };
  }
  if (req.input.sampling.responseFormat !== undefined) {
    throw InlaidError.invalid(
      "'tool_choice' \"required\" or a named function cannot be combined with response_format or guided_* (both constrain the output).",
      'tool_choice',
    );
  }
  return { ...req, input: { ...req.input, sampling: { ...req.input.sampling, responseFormat: format } }, tools: plan };
}

/**
 * A non-streamed response holds every generated token's logprobs until the end (openai-responder.ts collect): their
 * count is bounded (input-bounds.ts checkLogprobEntries). best_of candidates carry the sampled token's logprob even
 * when the client asked for none (best-of.ts candidatesOf). A left-out max_tokens counts as the served model's length
 * less one, looked up only then (input-bounds.ts checkLogprobEntries / unsetMaxTokens).
 */
function checkHeldLogprobs(choices: number, maxTokens: number, logprobs: number | undefined, ranked: boolean, param: string, unset: UnsetMax): void {
  const top = logprobs ?? (ranked ? 0 : undefined);
  if (top !== undefined) checkLogprobEntries(choices, maxTokens, top, param, unset);
}

/** `maxModelLenOf`: the served model's length by the body's `model` (the workers report it). */
function unsetMaxOf(body: Body, param: string, maxModelLenOf: ((model: string) => number | undefined) | undefined): UnsetMax {
  const model = body['model'];
  return { param, modelLen: () => (maxModelLenOf !== undefined && typeof model === 'string' ? maxModelLenOf(model) : undefined) };
}

function build(
  body: Body,
  api: Api,
  prompt: string,
  messages: common.ChatMessage[],
  maxParam: string,
  parseLogprobs: (body: Body) => number | undefined,
  logprobsParam: string,
  maxModelLenOf?: (model: string) => number | undefined,
): OpenAIRequest {
  const model = parseModel(body);
  const streaming = parseStreaming(body);
  const { n, bestOf } = parseChoices(body, api, streaming.stream);
  const logprobs = parseLogprobs(body);
  const echo = parseEcho(body, api, prompt);
  const promptLogprobs = parsePromptLogprobs(body, streaming.stream);
  const scored = workerPromptLogprobs(promptLogprobs, echo === undefined ? undefined : logprobs);
  const sampling = { ...parseSampling(body, maxParam, logprobs), ...(scored === undefined ? {} : { promptLogprobs: scored }) };
  if (!streaming.stream) {
    checkHeldLogprobs(bestOf ?? n, sampling.maxTokens, logprobs, bestOf !== undefined, logprobsParam, unsetMaxOf(body, maxParam, maxModelLenOf));
  }
  return {
    input: { model, prompt, messages, sampling, api },
    ...streaming,
    n,
    ...(bestOf === undefined ? {} : { bestOf }),
    ...(echo === undefined ? {} : { echo }),
    ...(promptLogprobs === undefined ? {} : { promptLogprobs }),
  };
}

/**
 * Tool calling is chat completions' only: a completion prompt has no tool turns to render the tools into and the
 * completions response has no tool_calls. vLLM's /v1/completions ignores these fields (logged at debug level), so
 * the model never sees the tools; OpenAI refuses unknown fields. Refused here (400 naming the field), null is left out.
 */
const CHAT_ONLY_FIELDS = ['tools', 'tool_choice', 'parallel_tool_calls'] as const;

function refuseChatOnly(body: Body): void {
  for (const name of CHAT_ONLY_FIELDS) {
    if (isPresent(body[name])) {
      throw InlaidError.invalid(`'${name}' is not supported on /v1/completions: tool calling needs chat messages; use /v1/chat/completions.`, name);
    }
  }
}

/**
 * vLLM's `add_special_tokens` to the worker's Prepare when given; left out, the worker's default (true for a prompt,
 * false for messages: the chat template holds the special tokens).
 */
function withSpecialTokens(req: OpenAIRequest, body: Body): OpenAIRequest {
  const special = optBoolean(body, 'add_special_tokens');
  return special === undefined ? req : { ...req, input: { ...req.input, addSpecialTokens: special } };
}

/** `maxModelLenOf`: the served model's length by the body's `model` (bounds the logprobs held when max_tokens is left out). */
export function parseCompletionRequest(raw: unknown, maxModelLenOf?: (model: string) => number | undefined): OpenAIRequest {
  const body = asObject(raw);
  refuseChatOnly(body);
  const req = build(body, 'completions', parsePrompt(body), [], 'max_tokens', parseCompletionLogprobs, 'logprobs', maxModelLenOf);
  return withSpecialTokens(req, body);
}

/**
 * The chat prompt of a body with `messages` (and `tools` / `tool_choice`) exactly as chat completions renders it
 * for the worker: /tokenize uses it so its ids are those generation would use.
 */
export function parseChatPrompt(raw: unknown, support: ToolSupport): { messages: common.ChatMessage[]; tools: string } {
  const body = asObject(raw);
  return chatMessages(body, parseToolPlan(body, support), support);
}

/**
 * `supportOf`: the served model's tool support (tool-format.ts; the workers report it), by the body's `model`;
 * without it, the Hermes fallback. `add_special_tokens` (vLLM's; left out: false, the chat template holds the
 * special tokens) goes to the worker's Prepare. `maxModelLenOf`: as parseCompletionRequest's.
 */
export function parseChatRequest(
  raw: unknown,
  supportOf?: (model: string) => ToolSupport,
  maxModelLenOf?: (model: string) => number | undefined,
): OpenAIRequest {
  const body = asObject(raw);
  const support = (supportOf !== undefined && typeof body['model'] === 'string' ? supportOf(body['model']) : undefined) ?? HERMES_FALLBACK;
  const plan = parseToolPlan(body, support);
  const chat = chatMessages(body, plan, support);
  const built = build(body, 'chat.completions', '', chat.messages, 'max_completion_tokens', parseChatLogprobs, 'top_logprobs', maxModelLenOf);
  const withSpecial = withSpecialTokens(built, body);
  const withNative = chat.tools === '' ? withSpecial : { ...withSpecial, input: { ...withSpecial.input, tools: chat.tools } };
  return plan === undefined ? withNative : withTools(withNative, plan);
}

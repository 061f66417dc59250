/**
 * Pure validation of OpenAI completion / chat-completion bodies into a GenerationInput. Every rejection is
 * an InlaidError(INVALID_ARGUMENT) naming the parameter. Unknown fields are ignored, as OpenAI does.
 */
import type { common } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import type { Api, GenerationInput } from '../generation/generation.types';
import { BOUNDS, checkModelId, checkPromptChars, checkStops } from '../limits/input-bounds';

export interface OpenAIRequest {
  readonly input: GenerationInput;
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

type Body = Record<string, unknown>;
const CHAT_ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function isPresent(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function asObject(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw InlaidError.invalid('The request body must be a JSON object.');
  }
  return body as Body;
}

function optNumber(body: Body, name: string, min: number, max: number, integer = false): number | undefined {
  const v = body[name];
  if (!isPresent(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw InlaidError.invalid(`'${name}' must be ${integer ? 'an integer' : 'a number'}.`, name);
  }
  if (v < min || v > max) throw InlaidError.invalid(`'${name}' must be between ${min} and ${max}, got ${v}.`, name);
  return v;
}

function optBoolean(body: Body, name: string): boolean | undefined {
  const v = body[name];
  if (!isPresent(v)) return undefined;
  if (typeof v !== 'boolean') throw InlaidError.invalid(`'${name}' must be a boolean.`, name);
  return v;
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

function rejectUnsupported(body: Body): void {
  const n = optNumber(body, 'n', 1, 128, true);
  if (n !== undefined && n !== 1) throw InlaidError.invalid("Only 'n' = 1 is supported.", 'n');
  const bestOf = optNumber(body, 'best_of', 1, 128, true);
  if (bestOf !== undefined && bestOf !== 1) throw InlaidError.invalid("Only 'best_of' = 1 is supported.", 'best_of');
  if (body['echo'] === true) throw InlaidError.invalid("'echo' is not supported.", 'echo');
  const logprobs = body['logprobs'];
  if (isPresent(logprobs) && logprobs !== false) throw InlaidError.invalid("'logprobs' is not supported.", 'logprobs');
}

function parseSampling(body: Body, maxTokensParam: string): common.SamplingParams {
  const maxTokens =
    optNumber(body, maxTokensParam, 1, BOUNDS.maxTokens, true) ?? optNumber(body, 'max_tokens', 1, BOUNDS.maxTokens, true);
  const seed = optNumber(body, 'seed', 0, Number.MAX_SAFE_INTEGER, true);
  const topK = optNumber(body, 'top_k', -1, BOUNDS.topK, true);
  return {
    maxTokens: maxTokens ?? 0,
    temperature: optNumber(body, 'temperature', 0, 2),
    topP: optNumber(body, 'top_p', 0, 1),
    topK: topK !== undefined && topK > 0 ? topK : undefined,
    seed,
    stop: parseStop(body),
    stopTokenIds: parseStopTokenIds(body),
    ignoreEos: optBoolean(body, 'ignore_eos') ?? false,
  };
}

function parseStreaming(body: Body): { stream: boolean; includeUsage: boolean } {
  const stream = optBoolean(body, 'stream') ?? false;
  const options = body['stream_options'];
  if (!isPresent(options)) return { stream, includeUsage: false };
  if (!stream) throw InlaidError.invalid("'stream_options' is only allowed when 'stream' is true.", 'stream_options');
  const opts = asObject(options);
  return { stream, includeUsage: optBoolean(opts, 'include_usage') ?? false };
}

function parsePrompt(body: Body): string {
  const prompt = body['prompt'];
  const one = typeof prompt === 'string' ? prompt : Array.isArray(prompt) && prompt.length === 1 ? prompt[0] : undefined;
  if (typeof one === 'string') {
    checkPromptChars(one.length, 'prompt');
    return one;
  }
  if (Array.isArray(prompt) && prompt.length > 1) throw InlaidError.invalid("Only one 'prompt' per request is supported.", 'prompt');
  throw InlaidError.invalid("'prompt' must be a string.", 'prompt');
}

function messageContent(content: unknown, index: number): string {
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

function parseMessages(body: Body): common.ChatMessage[] {
  const messages = body['messages'];
  if (!Array.isArray(messages) || messages.length === 0) {
    throw InlaidError.invalid("'messages' must be a non-empty list.", 'messages');
  }
  if (messages.length > BOUNDS.messages) throw InlaidError.invalid(`'messages' accepts at most ${BOUNDS.messages} messages.`, 'messages');
  const parsed = messages.map((m: unknown, i) => {
    const msg = asObject(m);
    const role = msg['role'];
    if (typeof role !== 'string' || !CHAT_ROLES.has(role)) {
      throw InlaidError.invalid(`messages[${i}].role must be one of ${[...CHAT_ROLES].join(', ')}.`, `messages[${i}].role`);
    }
    return { role: role === 'developer' ? 'system' : role, content: messageContent(msg['content'], i) };
  });
  checkPromptChars(parsed.reduce((n, m) => n + m.content.length, 0), 'messages');
  return parsed;
}

function build(body: Body, api: Api, prompt: string, messages: common.ChatMessage[], maxParam: string): OpenAIRequest {
  const model = parseModel(body);
  rejectUnsupported(body);
  const sampling = parseSampling(body, maxParam);
  return { input: { model, prompt, messages, sampling, api }, ...parseStreaming(body) };
}

export function parseCompletionRequest(raw: unknown): OpenAIRequest {
  const body = asObject(raw);
  return build(body, 'completions', parsePrompt(body), [], 'max_tokens');
}

export function parseChatRequest(raw: unknown): OpenAIRequest {
  const body = asObject(raw);
  return build(body, 'chat.completions', '', parseMessages(body), 'max_completion_tokens');
}

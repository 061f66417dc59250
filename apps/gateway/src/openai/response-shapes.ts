/**
 * Pure builders of OpenAI's exact response and stream-chunk shapes for completions and chat completions,
 * including their logprobs objects.
 */
import type { common } from '@inlaid/proto';
import type { FinishReason } from '../generation/generation.types';
import type { ToolCall } from './tool-calls';
import type { ToolCallDelta } from './tool-events';
import type { VllmPromptLogprobs } from './prompt-logprobs';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: of prompt_tokens, those served from the worker's prefix cache (as vLLM reports them). */
  prompt_tokens_details: { cached_tokens: number };
}

/** Identity of one response, repeated in every chunk. */
export interface ResponseMeta {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

type OpenAIFinish = 'stop' | 'length' | 'tool_calls' | null;

export function usageOf(promptTokens: number, completionTokens: number, cachedTokens = 0): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

/**
 * A request's cached prompt tokens from its choices' counts. prompt_tokens counts the prompt once whatever
 * `n`, so the cached count is of that one prompt too: the fewest any choice took from the cache (a sum would
 * exceed prompt_tokens; the largest would credit choices that reuse the prompt their sibling just computed).
 */
export function cachedTokensOf(perChoice: readonly number[], promptTokens: number): number {
  return perChoice.length === 0 ? 0 : Math.min(promptTokens, ...perChoice);
}

/**
 * OpenAI's stop, length, or tool_calls when `toolCalls` (tool-events.ts finishesWithToolCalls decides it); an
 * aborted or failed request never reaches a finished response.
 */
export function openAIFinish(reason: FinishReason | null, toolCalls = false): OpenAIFinish {
  if (reason === null) return null;
  if (toolCalls) return 'tool_calls';
  return reason === 'length' ? 'length' : 'stop';
}

/** JSON has no -Infinity: like vLLM, a logprob below this (or -inf) is sent as this value. */
export const MIN_JSON_LOGPROB = -9999;

/** Stands in for a TokenLogprob without its (always set) sampled entry. */
const NO_ENTRY: common.LogprobEntry = { tokenId: 0, token: '', tokenBytes: Buffer.alloc(0), logprob: MIN_JSON_LOGPROB };

/** A logprob as JSON can carry it (MIN_JSON_LOGPROB at least). */
export function jsonLogprob(v: number): number {
  return v > MIN_JSON_LOGPROB ? v : MIN_JSON_LOGPROB;
}

/** Code points, as Python's len() counts them (vLLM's text_offset). */
export function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** OpenAI's completions logprobs object for a run of tokens. */
export interface CompletionLogprobs {
  tokens: string[];
  /** null only for the first token of an echoed prompt (openai/prompt-logprobs.ts). */
  token_logprobs: Array<number | null>;
  top_logprobs: Array<Record<string, number> | null>;
  text_offset: number[];
}

/**
 * Completions logprobs of `tokens`, the first of which starts at character `offset` of the completion.
 * text_offset accumulates the tokens' own text lengths (as vLLM does). Each top_logprobs dict holds the
 * top-N alternatives and the sampled token (so up to N + 1 entries, as OpenAI documents).
 */
export function completionLogprobs(tokens: readonly common.TokenLogprob[], offset: number): { logprobs: CompletionLogprobs; end: number } {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const t of tokens) {
    const sampled = t.sampled ?? NO_ENTRY;
    out.tokens.push(sampled.token);
    out.token_logprobs.push(jsonLogprob(sampled.logprob));
    const top = new Map<string, number>();
    for (const e of [...t.top, sampled]) if (!top.has(e.token)) top.set(e.token, jsonLogprob(e.logprob));
    out.top_logprobs.push(Object.fromEntries(top));
    out.text_offset.push(at);
    at += charCount(sampled.token);
  }
  return { logprobs: out, end: at };
}

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface ChatTokenLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

/** OpenAI's chat logprobs object: one content entry per token, with exactly the top-N alternatives. */
export interface ChatLogprobs {
  content: ChatTokenLogprob[];
  refusal: null;
}

function chatEntry(e: common.LogprobEntry): ChatTopLogprob {
  return { token: e.token, logprob: jsonLogprob(e.logprob), bytes: Array.from(e.tokenBytes) };
}

export function chatLogprobs(tokens: readonly common.TokenLogprob[]): ChatLogprobs {
  return {
    content: tokens.map((t) => {
      const sampled = t.sampled ?? NO_ENTRY;
      return { ...chatEntry(sampled), top_logprobs: t.top.map(chatEntry) };
    }),
    refusal: null,
  };
}

export interface CompletionChoice {
  text: string;
  index: number;
  logprobs: CompletionLogprobs | null;
  finish_reason: OpenAIFinish;
  /** vLLM's, when the request set prompt_logprobs (openai/prompt-logprobs.ts). */
  prompt_logprobs?: VllmPromptLogprobs;
}

export function completionChoice(
  index: number,
  text: string,
  finish: FinishReason | null,
  logprobs: CompletionLogprobs | null = null,
  promptLogprobs?: VllmPromptLogprobs,
): CompletionChoice {
  return { text, index, logprobs, finish_reason: openAIFinish(finish), ...(promptLogprobs === undefined ? {} : { prompt_logprobs: promptLogprobs }) };
}

export function completionResponse(meta: ResponseMeta, choices: CompletionChoice[], usage: Usage) {
  return {
    id: meta.id,
    object: 'text_completion' as const,
    created: meta.created,
    model: meta.model,
    choices,
    usage,
  };
}

export function completionChunk(meta: ResponseMeta, choice: CompletionChoice, withUsage: boolean) {
  return {
    id: meta.id,
    object: 'text_completion' as const,
    created: meta.created,
    model: meta.model,
    choices: [choice],
    ...(withUsage ? { usage: null } : {}),
  };
}

export function completionUsageChunk(meta: ResponseMeta, usage: Usage) {
  return { id: meta.id, object: 'text_completion' as const, created: meta.created, model: meta.model, choices: [], usage };
}

export interface ChatMessageOut {
  role: 'assistant';
  /** null when the message is only tool calls. */
  content: string | null;
  refusal: null;
  /** Present when the model called tools. */
  tool_calls?: ToolCall[];
}

export interface ChatChoice {
  index: number;
  message: ChatMessageOut;
  logprobs: ChatLogprobs | null;
  finish_reason: OpenAIFinish;
}

export function chatChoice(
  index: number,
  content: string | null,
  finish: FinishReason | null,
  logprobs: ChatLogprobs | null = null,
  toolCalls: ToolCall[] = [],
  toolCallsFinish = false,
): ChatChoice {
  const message: ChatMessageOut = { role: 'assistant', content, refusal: null, ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}) };
  return { index, message, logprobs, finish_reason: openAIFinish(finish, toolCallsFinish) };
}

/** `promptLogprobs`: vLLM's top-level prompt_logprobs, when the request set it. */
export function chatResponse(meta: ResponseMeta, choices: ChatChoice[], usage: Usage, promptLogprobs?: VllmPromptLogprobs) {
  return {
    id: meta.id,
    object: 'chat.completion' as const,
    created: meta.created,
    model: meta.model,
    choices,
    usage,
    ...(promptLogprobs === undefined ? {} : { prompt_logprobs: promptLogprobs }),
  };
}

export type ChatDelta = { role?: 'assistant'; content?: string; tool_calls?: ToolCallDelta[] };

export function chatChunk(
  meta: ResponseMeta,
  delta: ChatDelta,
  finish: FinishReason | null,
  withUsage: boolean,
  index = 0,
  logprobs: ChatLogprobs | null = null,
  toolCalls = false,
) {
  return {
    id: meta.id,
    object: 'chat.completion.chunk' as const,
    created: meta.created,
    model: meta.model,
    choices: [{ index, delta, logprobs, finish_reason: openAIFinish(finish, toolCalls) }],
    ...(withUsage ? { usage: null } : {}),
  };
}

export function chatUsageChunk(meta: ResponseMeta, usage: Usage) {
  return { id: meta.id, object: 'chat.completion.chunk' as const, created: meta.created, model: meta.model, choices: [], usage };
}

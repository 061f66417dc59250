/**
 * Pure builders of OpenAI's exact response and stream-chunk shapes for completions and chat completions.
 */
import type { FinishReason } from '../generation/generation.types';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Identity of one response, repeated in every chunk. */
export interface ResponseMeta {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

type OpenAIFinish = 'stop' | 'length' | null;

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

/** OpenAI only knows stop and length; an aborted or failed request never reaches a finished response. */
export function openAIFinish(reason: FinishReason | null): OpenAIFinish {
  if (reason === null) return null;
  return reason === 'length' ? 'length' : 'stop';
}

export function completionResponse(meta: ResponseMeta, text: string, finish: FinishReason | null, usage: Usage) {
  return {
    id: meta.id,
    object: 'text_completion' as const,
    created: meta.created,
    model: meta.model,
    choices: [{ text, index: 0, logprobs: null, finish_reason: openAIFinish(finish) }],
    usage,
  };
}

export function completionChunk(meta: ResponseMeta, text: string, finish: FinishReason | null, withUsage: boolean) {
  return {
    id: meta.id,
    object: 'text_completion' as const,
    created: meta.created,
    model: meta.model,
    choices: [{ text, index: 0, logprobs: null, finish_reason: openAIFinish(finish) }],
    ...(withUsage ? { usage: null } : {}),
  };
}

export function completionUsageChunk(meta: ResponseMeta, usage: Usage) {
  return { id: meta.id, object: 'text_completion' as const, created: meta.created, model: meta.model, choices: [], usage };
}

export function chatResponse(meta: ResponseMeta, content: string, finish: FinishReason | null, usage: Usage) {
  return {
    id: meta.id,
    object: 'chat.completion' as const,
    created: meta.created,
    model: meta.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant' as const, content, refusal: null },
        logprobs: null,
        finish_reason: openAIFinish(finish),
      },
    ],
    usage,
  };
}

export type ChatDelta = { role?: 'assistant'; content?: string };

export function chatChunk(meta: ResponseMeta, delta: ChatDelta, finish: FinishReason | null, withUsage: boolean) {
  return {
    id: meta.id,
    object: 'chat.completion.chunk' as const,
    created: meta.created,
    model: meta.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: openAIFinish(finish) }],
    ...(withUsage ? { usage: null } : {}),
  };
}

export function chatUsageChunk(meta: ResponseMeta, usage: Usage) {
  return { id: meta.id, object: 'chat.completion.chunk' as const, created: meta.created, model: meta.model, choices: [], usage };
}

/** The responder's non-streamed body for n choices over a fake generation service: usage with cached tokens. */
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import { OpenAIResponder } from './openai-responder';
import type { OpenAIRequest } from './request-validation';

const input: GenerationInput = {
  model: 'sql',
  prompt: 'a long prompt',
  messages: [],
  sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false },
  api: 'completions',
};

/** Choice i produces two tokens and reports cached[i] prompt tokens from the cache. */
function service(cached: number[]): GenerationService {
  let next = 0;
  const start = (i: GenerationInput): Promise<Generation> => {
    const c = cached[next++] ?? 0;
    const d = (text: string, finishReason: GenerationDelta['finishReason'], completionTokens: number): GenerationDelta => ({
      text, tokenIds: [1], finishReason, promptTokens: 40, completionTokens, cachedTokens: c,
    });
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      yield d('x', null, 1);
      yield d('y', 'length', 2);
    }
    return Promise.resolve({ id: i.requestId ?? 'cmpl-1', model: 'sql', promptTokens: 40, created: 1, deltas: deltas(), abort: () => undefined });
  };
  return { start } as unknown as GenerationService;
}

async function body(kind: 'completions' | 'chat.completions', n: number, cached: number[]): Promise<Record<string, unknown>> {
  const res = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: false, json: jest.fn() });
  const req: OpenAIRequest = { input: { ...input, api: kind }, stream: false, includeUsage: false, n };
  await new OpenAIResponder(service(cached)).respond(kind, req, res as unknown as Response);
  expect(res.json).toHaveBeenCalledTimes(1);
  return res.json.mock.calls[0][0] as Record<string, unknown>;
}

describe('OpenAIResponder usage', () => {
  it('reports the cached prompt tokens of one choice', async () => {
    const b = await body('completions', 1, [32]);
    expect(b['usage']).toEqual({ prompt_tokens: 40, completion_tokens: 2, total_tokens: 42, prompt_tokens_details: { cached_tokens: 32 } });
  });

  it('counts the prompt once for n choices: completions summed, cached the fewest', async () => {
    const chat = await body('chat.completions', 3, [32, 32, 48]);
    expect(chat['usage']).toEqual({ prompt_tokens: 40, completion_tokens: 6, total_tokens: 46, prompt_tokens_details: { cached_tokens: 32 } });
    const cold = await body('completions', 2, [0, 32]);
    expect((cold['usage'] as Record<string, unknown>)['prompt_tokens_details']).toEqual({ cached_tokens: 0 });
  });
});

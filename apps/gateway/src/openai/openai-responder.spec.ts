/** The responder's non-streamed body for n choices over a fake generation service: usage with cached tokens. */
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import { OpenAIResponder } from './openai-responder';
import type { OpenAIRequest } from './request-validation';
import type { ToolPlan } from './tools';
import { startOnly } from '../testing/start-only';

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
  return startOnly(start);
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

describe('OpenAIResponder.collect with tools and n > 1', () => {
  /** Choice i's output arrives as outputs[i].pieces, the last with outputs[i].finish. */
  function scripted(outputs: Array<{ pieces: string[]; finish: GenerationDelta['finishReason'] }>): GenerationService {
    let next = 0;
    const start = (): Promise<Generation> => {
      const { pieces, finish } = outputs[next++];
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        for (const [i, text] of pieces.entries()) {
          yield { text, tokenIds: [1], finishReason: i === pieces.length - 1 ? finish : null, promptTokens: 40, completionTokens: i + 1 };
        }
      }
      return Promise.resolve({ id: 'chatcmpl-1', model: 'sql', promptTokens: 40, created: 1, deltas: deltas(), abort: () => undefined });
    };
    return startOnly(start);
  }

  const TOOLS = [{ name: 'get_weather', parameters: { type: 'object' } }];

  async function choices(tools: ToolPlan, outputs: Array<{ pieces: string[]; finish: GenerationDelta['finishReason'] }>) {
    const res = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: false, json: jest.fn() });
    const req: OpenAIRequest = { input: { ...input, api: 'chat.completions' }, stream: false, includeUsage: false, n: outputs.length, tools };
    await new OpenAIResponder(scripted(outputs)).respond('chat.completions', req, res as unknown as Response);
    return (res.json.mock.calls[0][0] as { choices: Array<Record<string, any>> }).choices;
  }

  it('auto: each choice parsed on its own, by index', async () => {
    const out = await choices({ tools: TOOLS, mode: 'auto', parallel: true }, [
      { pieces: ['Sure.\n<tool_call>{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}</tool_call>'], finish: 'stop' },
      { pieces: ['It is ', 'sunny.'], finish: 'stop' },
    ]);
    expect(out.map((c) => c['index'])).toEqual([0, 1]);
    expect(out[0]['message']).toMatchObject({ content: 'Sure.', tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] });
    expect(out[0]['finish_reason']).toBe('tool_calls');
    expect(out[1]).toMatchObject({ message: { content: 'It is sunny.' }, finish_reason: 'stop' });
    expect(out[1]['message']['tool_calls']).toBeUndefined();
  });

  it('named: a choice cut by a stop string keeps its partial call but finishes with stop; max_tokens with length', async () => {
    const out = await choices({ tools: TOOLS, mode: 'named', named: 'get_weather', parallel: true }, [
      { pieces: ['{"name": "get_weather", ', '"arguments": {"city": "Rome"}}'], finish: 'stop' },
      { pieces: ['{"name": "get_weather", ', '"arguments": {"ci'], finish: 'stop' },
      { pieces: ['{"name": "get_weather", ', '"arguments": {"city": "Ro'], finish: 'length' },
    ]);
    expect(out.map((c) => c['finish_reason'])).toEqual(['tool_calls', 'stop', 'length']);
    expect(out.map((c) => c['message']['tool_calls'][0].function.arguments)).toEqual(['{"city": "Rome"}', '{"ci', '{"city": "Ro']);
    expect(new Set(out.map((c) => c['message']['tool_calls'][0].id)).size).toBe(3);
  });
});

/** A completion of `total` deltas counting how many its consumer has pulled. */
function countingService(total: number) {
  const counter = { pulled: 0 };
  const start = (): Promise<Generation> => {
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      for (let i = 1; i <= total; i++) {
        counter.pulled = i;
        yield { text: 'x', tokenIds: [1], finishReason: i === total ? 'length' : null, promptTokens: 2, completionTokens: i };
      }
    }
    return Promise.resolve({ id: 'cmpl-1', model: 'sql', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
  };
  return { generation: startOnly(start), counter };
}

/** An SSE response whose socket buffer is full (write() false) while `full`; `ended` once end() is called. */
function slowClient() {
  const state = { full: true, writes: 0 };
  let ended!: () => void;
  const done = new Promise<void>((r) => (ended = r));
  const res = Object.assign(new EventEmitter(), {
    destroyed: false, writableFinished: false, closed: false, headersSent: false,
    status: () => res,
    set: () => res,
    flushHeaders: () => void (res.headersSent = true),
    write: () => (state.writes++, !state.full),
    end: () => {
      res.writableFinished = true;
      ended();
    },
  });
  return { res, state, done };
}

const ticks = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('OpenAIResponder stream back-pressure', () => {
  const streamed: OpenAIRequest = { input, stream: true, includeUsage: false, n: 1 };

  it('stops pulling deltas while the client does not read, and resumes on drain', async () => {
    const { generation, counter } = countingService(1000);
    const { res, state, done } = slowClient();
    void new OpenAIResponder(generation).respond('completions', streamed, res as unknown as Response);
    await ticks(50);
    // before: all 1000 pulled and written into the socket's buffer while the client read nothing
    expect(counter.pulled).toBeLessThanOrEqual(3);
    const paused = state.writes;
    await ticks(20);
    expect(state.writes).toBe(paused);
    state.full = false;
    res.emit('drain');
    await done;
    expect(counter.pulled).toBe(1000);
    expect(state.writes).toBeGreaterThan(1000);
  });

  it('stops waiting when the client goes away', async () => {
    const { generation, counter } = countingService(1000);
    const { res, state, done } = slowClient();
    void new OpenAIResponder(generation).respond('completions', streamed, res as unknown as Response);
    await ticks(50);
    const paused = state.writes;
    res.destroyed = true;
    res.emit('close');
    await done;
    expect(state.writes).toBe(paused); // nothing more written after it left
    expect(counter.pulled).toBeLessThanOrEqual(3);
    expect(res.listenerCount('drain')).toBe(0);
  });
});

/**
 * Prompt logprobs: vLLM's prompt_logprobs and completions' echo with logprobs. Validation (request-validation.ts),
 * the shapes (prompt-logprobs.ts), the responder's bodies (completions choices, the chat response), the stream's
 * echo chunk and gRPC Generate's first message.
 */
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import type { common, inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import { toGenerationDelta } from '../generation/delta-mapping';
import { toGenerationInput } from '../grpc-api/generate-request';
import { inferenceHandlers } from '../grpc-api/inference-handlers';
import type { WorkersService } from '../workers/workers.service';
import { admitFor } from '../scheduling/resume';
import { generateCall } from '../testing/generate-call';
import { paramOf } from '../testing/invalid-param';
import { OpenAIResponder } from './openai-responder';
import { echoPromptLogprobs, vllmPromptLogprobs } from './prompt-logprobs';
import { parseChatRequest, parseCompletionRequest, type OpenAIRequest } from './request-validation';
import { StreamEncoder } from './stream-encoder';
import { startOnly } from '../testing/start-only';

/** A WorkersService with no ready worker (only what these handlers ask of it). */
const NO_WORKERS = { maxModelLen: () => undefined } as unknown as WorkersService;

const entry = (tokenId: number, token: string, logprob: number, rank?: number): common.LogprobEntry => ({
  tokenId, token, tokenBytes: Buffer.from(token), logprob, ...(rank === undefined ? {} : { rank }),
});

/** Prompt "Hi there": 'Hi' (no logprob), then ' there' (rank 3) with the top 3 alternatives. */
const PROMPT: common.TokenLogprob[] = [
  { sampled: entry(10, 'Hi', 0), top: [] },
  { sampled: entry(11, ' there', -2.5, 3), top: [entry(20, ' you', -0.5), entry(21, '!', -1.5), entry(11, ' there', -2.5)] },
];
const GEN = (token: string, logprob: number): common.TokenLogprob => ({ sampled: entry(30, token, logprob), top: [entry(30, token, logprob)] });

describe('prompt_logprobs validation', () => {
  const completion = { model: 'm', prompt: 'Hi there' };
  const chat = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };

  it('takes 0..20 on completions and chat and asks the worker for that many', () => {
    const c = parseCompletionRequest({ ...completion, prompt_logprobs: 3 });
    expect([c.promptLogprobs, c.input.sampling.promptLogprobs]).toEqual([3, 3]);
    expect(parseChatRequest({ ...chat, prompt_logprobs: 0 }).input.sampling.promptLogprobs).toBe(0);
    expect(parseCompletionRequest({ ...completion, prompt_logprobs: null }).input.sampling.promptLogprobs).toBeUndefined();
    expect(parseCompletionRequest(completion).input.sampling.promptLogprobs).toBeUndefined();
    for (const bad of [21, -1, 1.5, '2', true]) expect(paramOf(() => parseCompletionRequest({ ...completion, prompt_logprobs: bad }))).toBe('prompt_logprobs');
  });

  it('is refused with stream (as vLLM); echo with logprobs streams', () => {
    expect(paramOf(() => parseCompletionRequest({ ...completion, prompt_logprobs: 1, stream: true }))).toBe('prompt_logprobs');
    expect(paramOf(() => parseChatRequest({ ...chat, prompt_logprobs: 1, stream: true }))).toBe('prompt_logprobs');
    const streamed = parseCompletionRequest({ ...completion, echo: true, logprobs: 2, stream: true });
    expect([streamed.echo, streamed.promptLogprobs, streamed.input.sampling.promptLogprobs]).toEqual(['Hi there', undefined, 2]);
  });

  it('echo with logprobs asks the worker for the larger top N; echo alone asks nothing', () => {
    expect(parseCompletionRequest({ ...completion, echo: true, logprobs: 5, prompt_logprobs: 2 }).input.sampling.promptLogprobs).toBe(5);
    expect(parseCompletionRequest({ ...completion, echo: true, logprobs: 1, prompt_logprobs: 4 }).input.sampling.promptLogprobs).toBe(4);
    expect(parseCompletionRequest({ ...completion, echo: true }).input.sampling.promptLogprobs).toBeUndefined();
    expect(parseCompletionRequest({ ...completion, logprobs: 1 }).input.sampling.promptLogprobs).toBeUndefined();
  });

  it('gRPC: sampling.prompt_logprobs is range-checked naming the field', () => {
    const base = { model: 'm', prompt: 'hi', messages: [], requestId: '' };
    const plain = { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false };
    expect(toGenerationInput({ ...base, sampling: { ...plain, promptLogprobs: 20 } }).sampling.promptLogprobs).toBe(20);
    expect(paramOf(() => toGenerationInput({ ...base, sampling: { ...plain, promptLogprobs: 21 } }))).toBe('sampling.prompt_logprobs');
  });

  it('a resumed run with generated tokens does not ask again (they came with the first tokens)', () => {
    const req = { id: 'r', model: 'm', promptTokenIds: [1, 2], sampling: { maxTokens: 5, stop: [], stopTokenIds: [], ignoreEos: false, promptLogprobs: 2 } };
    expect(admitFor(req, [], 1).sampling?.promptLogprobs).toBe(2);
    expect(admitFor(req, [7], 1).sampling?.promptLogprobs).toBeUndefined();
  });
});

describe('prompt logprobs shapes', () => {
  it("vLLM's: null first, then the prompt token with its rank and the top k with ranks 1..k", () => {
    expect(vllmPromptLogprobs(PROMPT, 2)).toEqual([
      null,
      {
        '11': { logprob: -2.5, rank: 3, decoded_token: ' there' },
        '20': { logprob: -0.5, rank: 1, decoded_token: ' you' },
        '21': { logprob: -1.5, rank: 2, decoded_token: '!' },
      },
    ]);
    expect(vllmPromptLogprobs(PROMPT, 0)).toEqual([null, { '11': { logprob: -2.5, rank: 3, decoded_token: ' there' } }]);
    const inTop = vllmPromptLogprobs(PROMPT, 3)[1] ?? {};
    expect(Object.keys(inTop)).toHaveLength(3); // the prompt token once, with its own rank
    expect(inTop['11']?.rank).toBe(3);
  });

  it("completions' echo: the first token with null logprob and null top_logprobs, offsets over the tokens' text", () => {
    expect(echoPromptLogprobs(PROMPT, 1)).toEqual({
      tokens: ['Hi', ' there'],
      token_logprobs: [null, -2.5],
      top_logprobs: [null, { ' you': -0.5, ' there': -2.5 }],
      text_offset: [0, 2],
    });
  });

  it('the worker delta maps to the generation delta only when it carries entries', () => {
    const base = { requestId: 'r', text: '', tokenIds: [], finishReason: 0, promptTokens: 2, completionTokens: 0, cachedTokens: 0 };
    expect(toGenerationDelta({ ...base, promptLogprobs: { tokens: PROMPT } }, 2).promptLogprobs).toEqual(PROMPT);
    expect(toGenerationDelta({ ...base, promptLogprobs: { tokens: [] } }, 2).promptLogprobs).toBeUndefined();
  });
});

describe('OpenAIResponder with prompt logprobs', () => {
  /** Each generation yields ' a' then ' b' (logprobs -0.25, -0.75), the first delta with the prompt's logprobs. */
  let asked: string[] = [];
  function service(): GenerationService {
    asked = [];
    const start = (i: GenerationInput): Promise<Generation> => {
      if (i.sampling.promptLogprobs !== undefined) asked.push(i.requestId ?? '');
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        const lp = i.sampling.logprobs !== undefined;
        const prompt = i.sampling.promptLogprobs !== undefined ? { promptLogprobs: PROMPT } : {};
        yield { text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, ...(lp ? { logprobs: [GEN(' a', -0.25)] } : {}), ...prompt };
        yield { text: ' b', tokenIds: [31], finishReason: 'length', promptTokens: 2, completionTokens: 2, ...(lp ? { logprobs: [GEN(' b', -0.75)] } : {}) };
      }
      return Promise.resolve({ id: 'cmpl-1', model: 'm', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
    };
    return startOnly(start);
  }

  async function respond(kind: 'completions' | 'chat.completions', req: OpenAIRequest) {
    const res = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: false, json: jest.fn() });
    await new OpenAIResponder(service()).respond(kind, req, res as unknown as Response);
    return res.json.mock.calls[0][0] as Record<string, any>;
  }

  it('completions echo + logprobs: the prompt tokens first, the generated ones from the end of the echoed text', async () => {
    const req = parseCompletionRequest({ model: 'm', prompt: 'Hi there', echo: true, logprobs: 1, max_tokens: 2 });
    const body = await respond('completions', req);
    const choice = body['choices'][0];
    expect(choice['text']).toBe('Hi there a b');
    expect(choice['logprobs']).toEqual({
      tokens: ['Hi', ' there', ' a', ' b'],
      token_logprobs: [null, -2.5, -0.25, -0.75],
      top_logprobs: [null, { ' you': -0.5, ' there': -2.5 }, { ' a': -0.25 }, { ' b': -0.75 }],
      text_offset: [0, 2, 8, 10],
    });
    expect(choice['prompt_logprobs']).toBeUndefined();
    // each token starts where its text is in the echoed text
    choice['logprobs'].tokens.forEach((t: string, i: number) => expect((choice['text'] as string).slice(choice['logprobs'].text_offset[i], choice['logprobs'].text_offset[i] + t.length)).toBe(t));
  });

  it("prompt_logprobs go on each completions choice (vLLM), and on the chat response", async () => {
    const completion = await respond('completions', parseCompletionRequest({ model: 'm', prompt: 'Hi there', prompt_logprobs: 1, n: 2 }));
    expect(completion['choices'].map((c: Record<string, unknown>) => c['prompt_logprobs'])).toEqual([vllmPromptLogprobs(PROMPT, 1), vllmPromptLogprobs(PROMPT, 1)]);
    expect(asked).toHaveLength(1); // only choice 0 scores the prompt
    expect(asked[0]).toMatch(/#0$/);
    expect(completion['choices'][0]['logprobs']).toBeNull();
    const chat = await respond('chat.completions', parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }], prompt_logprobs: 0 }));
    expect(chat['prompt_logprobs']).toEqual(vllmPromptLogprobs(PROMPT, 0));
    const chatN = await respond('chat.completions', parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }], prompt_logprobs: 0, n: 3 }));
    expect([asked.length, chatN['prompt_logprobs']]).toEqual([1, vllmPromptLogprobs(PROMPT, 0)]);
    const plain = await respond('completions', parseCompletionRequest({ model: 'm', prompt: 'Hi there' }));
    expect('prompt_logprobs' in plain['choices'][0]).toBe(false);
  });

  it('best_of with echo + logprobs: one candidate scores the prompt, every kept choice carries it', async () => {
    const body = await respond('completions', parseCompletionRequest({ model: 'm', prompt: 'Hi there', echo: true, logprobs: 0, best_of: 3, n: 2, prompt_logprobs: 1 }));
    expect(asked).toHaveLength(1);
    expect(body['choices']).toHaveLength(2);
    for (const c of body['choices']) {
      expect(c['logprobs'].tokens.slice(0, 2)).toEqual(['Hi', ' there']);
      expect(c['logprobs'].token_logprobs.slice(0, 2)).toEqual([null, -2.5]);
      expect(c['prompt_logprobs']).toEqual(vllmPromptLogprobs(PROMPT, 1));
    }
  });
});

describe('StreamEncoder echo with logprobs', () => {
  const parseAll = (events: string[]) => events.filter((e) => !e.includes('[DONE]')).map((e) => JSON.parse(e.slice('data: '.length)).choices[0]);

  it('keeps the echo pending until a delta brings the prompt logprobs (or the choice ends)', () => {
    const enc = new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, { choices: 1, echo: 'Hi there', logprobs: true, topLogprobs: 0 });
    expect(enc.delta({ text: '', tokenIds: [], finishReason: null, promptTokens: 2, completionTokens: 0 })).toEqual([]);
    const out = parseAll(enc.delta({ text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, logprobs: [GEN(' a', -0.25)], promptLogprobs: PROMPT }));
    expect(out.map((c) => [c.text, c.logprobs.token_logprobs])).toEqual([['Hi there', [null, -2.5]], [' a', [-0.25]]]);
    const bare = new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, { choices: 1, echo: 'Hi', logprobs: true });
    expect(bare.delta({ text: 'x', tokenIds: [1], finishReason: null, promptTokens: 1, completionTokens: 1 })).toEqual([]);
    const ended = parseAll(bare.delta({ text: '', tokenIds: [], finishReason: 'stop', promptTokens: 1, completionTokens: 1 }));
    expect(ended.map((c) => c.text)).toEqual(['Hi', 'x', '']);
  });

  it("gives choice 0's prompt logprobs to a choice that finishes first, its echo chunk before its text", () => {
    const enc = new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, { choices: 2, echo: 'Hi there', logprobs: true, topLogprobs: 0 });
    expect(enc.delta({ text: ' z', tokenIds: [31], finishReason: 'stop', promptTokens: 2, completionTokens: 1, logprobs: [GEN(' z', -1)] }, 1)).toEqual([]);
    const out = parseAll(enc.delta({ text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, logprobs: [GEN(' a', -0.25)], promptLogprobs: PROMPT }, 0));
    expect(out.map((c) => [c.index, c.text, c.logprobs.token_logprobs, c.finish_reason])).toEqual([
      [0, 'Hi there', [null, -2.5], null],
      [0, ' a', [-0.25], null],
      [1, 'Hi there', [null, -2.5], null],
      [1, ' z', [-1], 'stop'],
    ]);
  });

  it("sends the prompt with its logprobs as the choice's first chunk, then offsets after it", () => {
    const enc = new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, { choices: 1, echo: 'Hi there', logprobs: true, topLogprobs: 0 });
    expect(enc.open()).toEqual([]); // the prompt's logprobs come with the first delta
    const parse = (events: string[]) => events.filter((e) => !e.includes('[DONE]')).map((e) => JSON.parse(e.slice('data: '.length)).choices[0]);
    const first = parse(enc.delta({ text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, logprobs: [GEN(' a', -0.25)], promptLogprobs: PROMPT }));
    expect(first).toEqual([
      { text: 'Hi there', index: 0, finish_reason: null, logprobs: { tokens: ['Hi', ' there'], token_logprobs: [null, -2.5], top_logprobs: [null, { ' there': -2.5 }], text_offset: [0, 2] } },
      { text: ' a', index: 0, finish_reason: null, logprobs: { tokens: [' a'], token_logprobs: [-0.25], top_logprobs: [{ ' a': -0.25 }], text_offset: [8] } },
    ]);
    const last = parse(enc.delta({ text: ' b', tokenIds: [31], finishReason: 'length', promptTokens: 2, completionTokens: 2, logprobs: [GEN(' b', -0.75)] }));
    expect(last[0].logprobs.text_offset).toEqual([10]);
  });
});

describe('gRPC Generate with prompt logprobs', () => {
  it("puts the prompt's entries on the choice's first message only", async () => {
    const start = (): Promise<Generation> => {
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        yield { text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, promptLogprobs: PROMPT };
        yield { text: ' b', tokenIds: [31], finishReason: 'length', promptTokens: 2, completionTokens: 2 };
      }
      return Promise.resolve({ id: 'g', model: 'm', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
    };
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(startOnly(start), NO_WORKERS, { admit } as unknown as CallGate);
    const request: inference.GenerateRequest = {
      model: 'm', prompt: 'Hi there', messages: [], requestId: '', sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false, promptLogprobs: 3 },
    };
    const { c, done, stream } = generateCall(request);
    handlers.generate(stream);
    expect(await done).toBeNull(); // ended, not failed
    const sent = c.write.mock.calls.map((w) => (w[0] as inference.GenerateResponse).promptLogprobs);
    expect(sent).toEqual([{ tokens: PROMPT }, undefined]);
  });

  it("with n = 2 asks only choice 0 and puts its entries on each choice's first message", async () => {
    const asked: boolean[] = [];
    const start = (i: GenerationInput): Promise<Generation> => {
      const scored = i.sampling.promptLogprobs !== undefined;
      asked.push(scored);
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        if (scored) await new Promise((r) => setTimeout(r, 20)); // choice 1 runs ahead
        yield { text: ' a', tokenIds: [30], finishReason: null, promptTokens: 2, completionTokens: 1, ...(scored ? { promptLogprobs: PROMPT } : {}) };
        yield { text: ' b', tokenIds: [31], finishReason: 'length', promptTokens: 2, completionTokens: 2 };
      }
      return Promise.resolve({ id: 'g', model: 'm', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
    };
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(startOnly(start), NO_WORKERS, { admit } as unknown as CallGate);
    const request: inference.GenerateRequest = {
      model: 'm', prompt: 'Hi there', messages: [], requestId: '', n: 2,
      sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false, promptLogprobs: 3 },
    };
    const { c, done, stream } = generateCall(request);
    handlers.generate(stream);
    expect(await done).toBeNull(); // ended, not failed
    expect(asked.filter(Boolean)).toHaveLength(1);
    const sent = c.write.mock.calls.map((w) => w[0] as inference.GenerateResponse);
    expect(sent.map((m) => [m.index, m.promptLogprobs?.tokens.length ?? 0])).toEqual([[1, 2], [1, 0], [0, 2], [0, 0]]);
  });
});

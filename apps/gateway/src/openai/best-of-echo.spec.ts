/**
 * Completions' best_of and echo: validation (request-validation.ts), ranking (best-of.ts), the responder's body
 * (the n best of best_of candidates, usage over all of them, echo before each text) and echo when streamed.
 */
import type { Response } from 'express';
import { EventEmitter } from 'node:events';
import type { common } from '@inlaid/proto';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import { paramOf } from '../testing/invalid-param';
import type { ChoiceDelta } from '../generation/fan-out';
import { bestCandidates, candidatesOf, checkBestOf, meanLogprob, rankedChoices } from './best-of';
import { OpenAIResponder } from './openai-responder';
import { parseChatRequest, parseCompletionRequest, type OpenAIRequest } from './request-validation';
import { StreamEncoder } from './stream-encoder';
import { startOnly } from '../testing/start-only';

const tok = (logprob: number): common.TokenLogprob => ({ sampled: { tokenId: 1, token: 'a', tokenBytes: Buffer.from('a'), logprob }, top: [] });

describe('best_of and echo validation', () => {
  it('best_of above n ranks candidates; equal to n or absent is plain n', () => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', n: 2, best_of: 5 })).toMatchObject({ n: 2, bestOf: 5 });
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', best_of: 3 })).toMatchObject({ n: 1, bestOf: 3 });
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', n: 3, best_of: 3 }).bestOf).toBeUndefined();
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', best_of: null }).bestOf).toBeUndefined();
  });

  it('chat takes best_of only equal to n, and no echo', () => {
    const chat = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
    expect(paramOf(() => parseChatRequest({ ...chat, best_of: 2 }))).toBe('best_of');
    expect(parseChatRequest({ ...chat, n: 2, best_of: 2 }).n).toBe(2);
    expect(paramOf(() => parseChatRequest({ ...chat, echo: true }))).toBe('echo');
  });

  it('echo carries the prompt; false or null is off; with logprobs the worker scores the prompt', () => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'Once upon', echo: true }).echo).toBe('Once upon');
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', echo: false }).echo).toBeUndefined();
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', echo: null, logprobs: 2 }).echo).toBeUndefined();
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', echo: true, logprobs: false }).echo).toBe('x');
    const scored = parseCompletionRequest({ model: 'm', prompt: 'x', echo: true, logprobs: 1 });
    expect([scored.echo, scored.input.sampling.promptLogprobs]).toEqual(['x', 1]);
  });
});

describe('best_of rules and candidates (shared by HTTP and gRPC)', () => {
  const input: GenerationInput = { model: 'm', prompt: 'x', messages: [], sampling: { maxTokens: 4, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'grpc' };

  it('is plain n when left out or equal to n; above n only on a prompt and unstreamed; never below n', () => {
    const prompt = { chat: false, stream: false };
    expect(checkBestOf(2, undefined, prompt)).toBeUndefined();
    expect(checkBestOf(2, 2, { chat: true, stream: true })).toBeUndefined();
    expect(checkBestOf(2, 5, prompt)).toBe(5);
    expect(paramOf(() => checkBestOf(3, 2, prompt))).toBe('best_of');
    expect(paramOf(() => checkBestOf(1, 2, { chat: true, stream: false }))).toBe('best_of');
    expect(paramOf(() => checkBestOf(1, 2, { chat: false, stream: true }))).toBe('best_of');
  });

  it('runs best_of candidates with sampled logprobs (the client may not have asked); plain n runs as asked', () => {
    expect(candidatesOf(input, 2, undefined)).toEqual({ input, count: 2 });
    const ranked = candidatesOf(input, 2, 4);
    expect([ranked.count, ranked.input.sampling.logprobs]).toEqual([4, 0]);
    expect(input.sampling.logprobs).toBeUndefined(); // the client's input is left as it was
    const withTop = { ...input, sampling: { ...input.sampling, logprobs: 3 } };
    expect(candidatesOf(withTop, 1, 3).input.sampling.logprobs).toBe(3);
  });

  it('rankedChoices holds every delta, then sends the n best candidates renumbered best first, each in order', async () => {
    const d = (text: string, logprob: number): ChoiceDelta['delta'] => ({
      text, tokenIds: [1], finishReason: null, promptTokens: 3, completionTokens: 1, logprobs: [tok(logprob)],
    });
    // candidate 0: mean -2; candidate 1: mean -0.5; candidate 2: mean -1; deltas interleaved as they arrive
    const arrivals: ChoiceDelta[] = [
      { index: 1, delta: d('b1', -0.5) }, { index: 0, delta: d('a1', -2) }, { index: 2, delta: d('c1', -1.5) },
      { index: 1, delta: d('b2', -0.5) }, { index: 2, delta: d('c2', -0.5) }, { index: 0, delta: d('a2', -2) },
    ];
    let done = false;
    async function* merged(): AsyncGenerator<ChoiceDelta> {
      yield* arrivals;
      done = true;
    }
    const out: Array<[number, string, boolean]> = [];
    for await (const { index, delta } of rankedChoices(merged(), 3, 2)) out.push([index, delta.text, done]);
    expect(out).toEqual([[0, 'b1', true], [0, 'b2', true], [1, 'c1', true], [1, 'c2', true]]);
  });

  it('rankedChoices sends nothing when a candidate fails', async () => {
    async function* failing(): AsyncGenerator<ChoiceDelta> {
      yield { index: 0, delta: { text: 'a', tokenIds: [1], finishReason: null, promptTokens: 1, completionTokens: 1, logprobs: [tok(-1)] } };
      throw new Error('choice 1 failed');
    }
    const seen: string[] = [];
    await expect((async () => {
      for await (const { delta } of rankedChoices(failing(), 2, 1)) seen.push(delta.text);
    })()).rejects.toThrow('choice 1 failed');
    expect(seen).toEqual([]);
  });
});

describe('best_of ranking', () => {
  it('is by mean sampled logprob (per token, not the sum), ties to the lower index, empty last', () => {
    expect(meanLogprob([tok(-1), tok(-3)])).toBe(-2);
    expect(meanLogprob([])).toBe(Number.NEGATIVE_INFINITY);
    // candidate 0: sum -3 over 3 tokens (mean -1); candidate 1: sum -1.5 over 1 token (mean -1.5)
    const candidates = [[tok(-1), tok(-1), tok(-1)], [tok(-1.5)], [], [tok(-0.5), tok(-1.5)], [tok(-0.2)]];
    expect(bestCandidates(candidates, 5)).toEqual([4, 0, 3, 1, 2]);
    expect(bestCandidates(candidates, 2)).toEqual([4, 0]);
    expect(bestCandidates([[], [tok(-Infinity)], []], 3)).toEqual([0, 1, 2]);
  });
});

describe('OpenAIResponder with best_of and echo', () => {
  const input: GenerationInput = {
    model: 'm', prompt: 'Q:', messages: [], sampling: { maxTokens: 4, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'completions',
  };

  /** Candidate i yields texts[i] as one token per character with logprobs[i] each. */
  function service(texts: string[], logprobs: number[], seen: GenerationInput[]): GenerationService {
    let next = 0;
    const start = (i: GenerationInput): Promise<Generation> => {
      seen.push(i);
      const k = next++;
      const text = texts[k] as string;
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        const chars = [...text];
        for (const [j, c] of chars.entries()) {
          yield {
            text: c, tokenIds: [j], finishReason: j === chars.length - 1 ? 'stop' : null, promptTokens: 7, completionTokens: j + 1,
            ...(i.sampling.logprobs !== undefined ? { logprobs: [tok(logprobs[k] as number)] } : {}),
          };
        }
      }
      return Promise.resolve({ id: i.requestId ?? 'cmpl-1', model: 'm', promptTokens: 7, created: 1, deltas: deltas(), abort: () => undefined });
    };
    return startOnly(start);
  }

  async function respond(req: OpenAIRequest, texts: string[], logprobs: number[]) {
    const seen: GenerationInput[] = [];
    const res = Object.assign(new EventEmitter(), { destroyed: false, writableFinished: false, json: jest.fn() });
    await new OpenAIResponder(service(texts, logprobs, seen)).respond('completions', req, res as unknown as Response);
    return { body: res.json.mock.calls[0][0] as { choices: Array<Record<string, any>>; usage: Record<string, number> }, seen };
  }

  it('generates best_of candidates with logprobs, returns the n best first, counts every token in usage', async () => {
    const req: OpenAIRequest = { input, stream: false, includeUsage: false, n: 2, bestOf: 4 };
    const { body, seen } = await respond(req, ['aa', 'bbb', 'c', 'dd'], [-2, -0.5, -3, -1]);
    expect(seen).toHaveLength(4);
    expect(seen.every((i) => i.sampling.logprobs === 0)).toBe(true); // asked for internally
    expect(body.choices.map((c) => [c['index'], c['text']])).toEqual([[0, 'bbb'], [1, 'dd']]);
    expect(body.choices.every((c) => c['logprobs'] === null)).toBe(true); // the client did not ask
    expect(body.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8, total_tokens: 15 });
  });

  it('keeps the client logprobs and echoes the prompt before each text', async () => {
    const req: OpenAIRequest = {
      input: { ...input, sampling: { ...input.sampling, logprobs: 2 } }, stream: false, includeUsage: false, n: 1, bestOf: 2,
    };
    const { body, seen } = await respond(req, ['xy', 'z'], [-1, -0.1]);
    expect(seen.every((i) => i.sampling.logprobs === 2)).toBe(true);
    expect(body.choices).toHaveLength(1);
    expect(body.choices[0]).toMatchObject({ text: 'z', logprobs: { token_logprobs: [-0.1] } });
    const echoed = await respond({ input, stream: false, includeUsage: false, n: 2, echo: 'Q:' }, ['ab', 'c'], [-1, -1]);
    expect(echoed.body.choices.map((c) => c['text'])).toEqual(['Q:ab', 'Q:c']);
    expect(echoed.seen.every((i) => i.sampling.logprobs === undefined)).toBe(true);
  });
});

describe('StreamEncoder echo', () => {
  it("sends the prompt as each completion choice's first chunk; chat ignores it", () => {
    const enc = new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, { choices: 2, echo: 'Hello' });
    const opened = enc.open().map((e) => JSON.parse(e.slice('data: '.length)) as { choices: Array<Record<string, unknown>> });
    expect(opened.map((c) => c.choices[0])).toEqual([
      { text: 'Hello', index: 0, logprobs: null, finish_reason: null },
      { text: 'Hello', index: 1, logprobs: null, finish_reason: null },
    ]);
    expect(new StreamEncoder('completions', { id: 'c', created: 1, model: 'm' }, false, {}).open()).toEqual([]);
    const chat = new StreamEncoder('chat.completions', { id: 'c', created: 1, model: 'm' }, false, { echo: 'Hello' });
    expect(chat.open().join('')).not.toContain('Hello');
  });
});

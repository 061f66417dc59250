/**
 * Reviewer findings on REST validation: the generated-logprobs budget of a non-streamed response, nested values that
 * are not objects, max_tokens hidden behind max_completion_tokens, and strings that are not well-formed UTF-16.
 * Every refusal is an INVALID_ARGUMENT naming the field (a 400 OpenAI error with that `param`).
 */
import { BOUNDS } from '../limits/input-bounds';
import { paramOf } from '../testing/invalid-param';
import { parseChatRequest, parseCompletionRequest } from './request-validation';

const messages = [{ role: 'user', content: 'x' }];
/** The served model's length as the controllers pass it (the specs' models are 8192 tokens long). */
const len8192 = (): number => 8192;

describe('generated logprobs held for a non-streamed response', () => {
  it.each([
    // the reviewer's request: 16 x 8192 x 21 = 2.75M entries (~0.9 GB of TokenLogprob held until the end)
    [{ n: 16, logprobs: 20, ignore_eos: true, max_tokens: 8192 }],
    // best_of counts: every candidate's logprobs are held for the ranking
    [{ n: 1, best_of: 16, logprobs: 20, max_tokens: 4096 }],
    // max_tokens left out counts as the model's length less one: 6 x 8191 x 21 = 1.03M
    [{ n: 6, logprobs: 20 }],
  ])('refuses completions %j naming logprobs', (fields) => {
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', ...fields }, len8192))).toBe('logprobs');
  });

  it('counts max_tokens left out as BOUNDS.maxTokens where the model is not known, and asks to set it', () => {
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', n: 2, logprobs: 20 }))).toBe('logprobs'); // 1.38M
    expect(() => parseCompletionRequest({ model: 'm', prompt: 'x', n: 6, logprobs: 20 }, len8192)).toThrow(/set 'max_tokens'/);
    expect(() => parseCompletionRequest({ model: 'm', prompt: 'x', n: 6, logprobs: 20 }, len8192)).toThrow(/6 choice\(s\) x 8191 max tokens/);
    const chat = { model: 'm', messages, n: 6, logprobs: true, top_logprobs: 20 };
    expect(() => parseChatRequest(chat, undefined, len8192)).toThrow(/set 'max_completion_tokens'/);
    expect(() => parseCompletionRequest({ model: 'm', prompt: 'x', n: 16, logprobs: 20, max_tokens: 8192 })).toThrow(/fewer max tokens/);
  });

  it.each([
    [{ n: 6, logprobs: 5 }], // 6 x 8191 x 6 = 295k (1.18M at 32,768)
    [{ best_of: 16, logprobs: 1 }], // 16 x 8191 x 2 = 262k (1.05M at 32,768)
    [{ n: 2, echo: true, logprobs: 20 }], // 2 x 8191 x 21 = 344k (1.38M at 32,768)
  ])('accepts completions %j without max_tokens within the model length', (fields) => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', ...fields }, len8192).input.sampling.maxTokens).toBe(0);
  });

  it('accepts chat n 2 with top_logprobs 20 without max_completion_tokens within the model length', () => {
    const body = { model: 'm', messages, n: 2, logprobs: true, top_logprobs: 20 };
    expect(parseChatRequest(body, undefined, len8192).n).toBe(2);
  });

  it('refuses chat naming top_logprobs', () => {
    const body = { model: 'm', messages, n: 16, logprobs: true, top_logprobs: 20, max_completion_tokens: 8192 };
    expect(paramOf(() => parseChatRequest(body))).toBe('top_logprobs');
  });

  it('accepts requests within the budget, and any streamed one (its encoder holds one chunk)', () => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 20 }).input.sampling.logprobs).toBe(20); // 688k
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', n: 16, logprobs: 20, max_tokens: 2048 }).n).toBe(16); // 688k
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', n: 16, max_tokens: BOUNDS.maxTokens }).n).toBe(16); // no logprobs
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', n: 16, best_of: 16, max_tokens: BOUNDS.maxTokens }).n).toBe(16);
    const streamed = parseCompletionRequest({ model: 'm', prompt: 'x', n: 16, logprobs: 20, max_tokens: 8192, stream: true });
    expect(streamed.stream).toBe(true);
    const chat = parseChatRequest({ model: 'm', messages, n: 16, logprobs: true, max_completion_tokens: BOUNDS.maxTokens });
    expect(chat.input.sampling.logprobs).toBe(0); // 16 x 32768 x 1 = 524k
  });
});

describe('max_tokens left out on a model longer than BOUNDS.maxTokens', () => {
  const len131072 = (): number => 131_072;

  it('counts the model length less one (what the worker generates), not 32,768', () => {
    // 131071 x 21 = 2.75M entries: refused (at 32,768 it was 688k and passed)
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 20 }, len131072))).toBe('logprobs');
    expect(() => parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 20 }, len131072)).toThrow(/1 choice\(s\) x 131071 max tokens/);
    const chat = { model: 'm', messages, logprobs: true, top_logprobs: 20 };
    expect(() => parseChatRequest(chat, undefined, len131072)).toThrow(/set 'max_completion_tokens'/);
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 5 }, len131072).input.sampling.logprobs).toBe(5); // 786k
  });

  it('looks the model up only when logprobs are asked and max_tokens is left out', () => {
    const lookup = jest.fn((): number => 8192);
    parseCompletionRequest({ model: 'm', prompt: 'x' }, lookup);
    parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 5, max_tokens: 16 }, lookup);
    parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 5, stream: true }, lookup);
    parseChatRequest({ model: 'm', messages }, undefined, lookup);
    expect(lookup).not.toHaveBeenCalled();
    parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 5 }, lookup);
    expect(lookup).toHaveBeenCalledTimes(1);
  });
});

describe('nested values that must be objects', () => {
  it.each([
    [{ model: 'm', messages: [1] }, 'messages[0]'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }, 'hi'] }, 'messages[1]'],
    [{ model: 'm', messages, stream: true, stream_options: 'x' }, 'stream_options'],
  ])('refuses %j naming %s', (body, param) => {
    expect(paramOf(() => parseChatRequest(body))).toBe(param);
  });

  it('names stream_options on completions', () => {
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', stream: true, stream_options: [true] }))).toBe('stream_options');
  });
});

describe('max_completion_tokens with max_tokens', () => {
  it.each([-7, 'abc', 0, 1.5, BOUNDS.maxTokens + 1])('refuses max_tokens %p beside a valid max_completion_tokens', (bad) => {
    expect(paramOf(() => parseChatRequest({ model: 'm', messages, max_completion_tokens: 5, max_tokens: bad }))).toBe('max_tokens');
  });

  it('still prefers a valid max_completion_tokens over a valid max_tokens', () => {
    expect(parseChatRequest({ model: 'm', messages, max_completion_tokens: 5, max_tokens: 7 }).input.sampling.maxTokens).toBe(5);
    expect(parseChatRequest({ model: 'm', messages, max_tokens: 7 }).input.sampling.maxTokens).toBe(7);
  });
});

describe('strings that are not well-formed UTF-16 (a lone surrogate becomes U+FFFD on the wire)', () => {
  it.each([
    [{ stop: ['\ud800'] }, 'stop'],
    [{ stop: 'ab\udc00' }, 'stop'],
    [{ prompt: 'x\ud800y' }, 'prompt'],
    [{ prompt: ['\udfff'] }, 'prompt'],
  ])('refuses completions %j naming %s', (fields, param) => {
    expect(paramOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', ...fields }))).toBe(param);
  });

  it.each([
    [{ messages: [{ role: 'user', content: 'a\ud800' }] }, 'messages[0].content'],
    [{ messages: [{ role: 'user', content: [{ type: 'text', text: '\udc00' }] }] }, 'messages[0].content'],
    [{ messages, stop: ['\ud83d'] }, 'stop'],
  ])('refuses chat %j naming %s', (fields, param) => {
    expect(paramOf(() => parseChatRequest({ model: 'm', ...fields }))).toBe(param);
  });

  it('accepts surrogate pairs (astral characters)', () => {
    const req = parseCompletionRequest({ model: 'm', prompt: '\ud83d\ude00 hi', stop: ['\ud83d\ude00'] });
    expect(req.input.sampling.stop).toEqual(['😀']);
    expect(parseChatRequest({ model: 'm', messages: [{ role: 'user', content: '😀' }] }).input.messages[0]?.content).toBe('😀');
  });
});

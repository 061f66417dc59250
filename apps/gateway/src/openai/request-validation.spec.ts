import { parseChatRequest, parseCompletionRequest } from './request-validation';
import { paramOf } from '../testing/invalid-param';

describe('parseCompletionRequest', () => {
  it('maps OpenAI fields onto sampling params', () => {
    const req = parseCompletionRequest({
      model: 'sql', prompt: 'hi', max_tokens: 7, temperature: 0, top_p: 0.9, top_k: 5, seed: 42,
      stop: 'END', stream: true, stream_options: { include_usage: true }, n: 1, presence_penalty: 0,
    });
    expect(req.stream).toBe(true);
    expect(req.includeUsage).toBe(true);
    expect(req.input).toEqual({
      model: 'sql', prompt: 'hi', messages: [], api: 'completions',
      sampling: { maxTokens: 7, temperature: 0, topP: 0.9, topK: 5, seed: 42, stop: ['END'], stopTokenIds: [], ignoreEos: false },
    });
  });

  it('uses server defaults when fields are absent or null', () => {
    const req = parseCompletionRequest({ model: 'base', prompt: ['only one'], temperature: null });
    expect(req.stream).toBe(false);
    expect(req.input.prompt).toBe('only one');
    expect(req.input.sampling).toEqual({
      maxTokens: 0, temperature: undefined, topP: undefined, topK: undefined, seed: undefined, stop: [], stopTokenIds: [], ignoreEos: false,
    });
  });

  it.each([
    [{ prompt: 'x' }, 'model'],
    [{ model: 'm' }, 'prompt'],
    [{ model: 'm', prompt: ['a', 'b'] }, 'prompt'],
    [{ model: 'm', prompt: 'x', n: 17 }, 'n'],
    [{ model: 'm', prompt: 'x', n: 0 }, 'n'],
    [{ model: 'm', prompt: 'x', n: 1.5 }, 'n'],
    [{ model: 'm', prompt: 'x', n: 3, best_of: 2 }, 'best_of'],
    [{ model: 'm', prompt: 'x', best_of: 17 }, 'best_of'],
    [{ model: 'm', prompt: 'x', n: 2, best_of: 3, stream: true }, 'best_of'],
    [{ model: 'm', prompt: 'x', echo: 'yes' }, 'echo'],
    [{ model: 'm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    [{ model: 'm', prompt: 'x', max_tokens: 1.5 }, 'max_tokens'],
    [{ model: 'm', prompt: 'x', temperature: 3 }, 'temperature'],
    [{ model: 'm', prompt: 'x', temperature: '1' }, 'temperature'],
    [{ model: 'm', prompt: 'x', top_p: 1.5 }, 'top_p'],
    [{ model: 'm', prompt: 'x', seed: -1 }, 'seed'],
    [{ model: 'm', prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ model: 'm', prompt: 'x', stop: [''] }, 'stop'],
    [{ model: 'm', prompt: 'x', stream: 'yes' }, 'stream'],
    [{ model: 'm', prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    [{ model: 'm', prompt: 'x', logprobs: 21 }, 'logprobs'],
    [{ model: 'm', prompt: 'x', logprobs: -1 }, 'logprobs'],
    [{ model: 'm', prompt: 'x', logprobs: true }, 'logprobs'],
    [{ model: 'm', prompt: 'x', logprobs: 2.5 }, 'logprobs'],
    [{ model: 'm', prompt: 'x', presence_penalty: 2.5 }, 'presence_penalty'],
    [{ model: 'm', prompt: 'x', presence_penalty: '1' }, 'presence_penalty'],
    [{ model: 'm', prompt: 'x', frequency_penalty: -2.01 }, 'frequency_penalty'],
    [{ model: 'm', prompt: 'x', repetition_penalty: 0 }, 'repetition_penalty'],
    [{ model: 'm', prompt: 'x', repetition_penalty: -1 }, 'repetition_penalty'],
    [{ model: 'm', prompt: 'x', repetition_penalty: 101 }, 'repetition_penalty'],
    // positive values that round to 0 (or a denormal) as the worker's protobuf float
    [{ model: 'm', prompt: 'x', temperature: 1e-50 }, 'temperature'],
    [{ model: 'm', prompt: 'x', temperature: 1e-40 }, 'temperature'],
    [{ model: 'm', prompt: 'x', temperature: 9e-7 }, 'temperature'],
    [{ model: 'm', prompt: 'x', repetition_penalty: 1e-50 }, 'repetition_penalty'],
    [{ model: 'm', prompt: 'x', repetition_penalty: 9e-7 }, 'repetition_penalty'],
    [{ model: 'm', prompt: 'x', top_p: 0 }, 'top_p'],
    [{ model: 'm', prompt: 'x', top_p: 1e-50 }, 'top_p'],
  ])('rejects %j naming %s', (body, param) => {
    expect(paramOf(() => parseCompletionRequest(body))).toBe(param);
  });

  it('accepts temperature 0 and the least positive temperature, top_p and repetition_penalty (1e-6)', () => {
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', temperature: 0 }).input.sampling.temperature).toBe(0);
    const least = parseCompletionRequest({ model: 'm', prompt: 'x', temperature: 1e-6, top_p: 1e-6, repetition_penalty: 1e-6 });
    expect(least.input.sampling).toMatchObject({ temperature: 1e-6, topP: 1e-6, repetitionPenalty: 1e-6 });
    expect(Math.fround(1e-6)).toBeGreaterThan(1.2e-38); // a normal float32 on its way to the worker
  });

  it('maps logprobs, penalties and n', () => {
    const req = parseCompletionRequest({
      model: 'm', prompt: 'x', logprobs: 5, n: 3, best_of: 3, presence_penalty: 0.5, frequency_penalty: -1, repetition_penalty: 1.2,
    });
    expect(req.n).toBe(3);
    expect(req.input.sampling).toMatchObject({ logprobs: 5, presencePenalty: 0.5, frequencyPenalty: -1, repetitionPenalty: 1.2 });
    const zero = parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: 0, presence_penalty: 0, repetition_penalty: 1 });
    expect(zero.n).toBe(1);
    expect(zero.input.sampling.logprobs).toBe(0); // the sampled token's logprob, no alternatives
    expect(zero.input.sampling.presencePenalty).toBeUndefined(); // 0 and 1 are "off": the field stays unset
    expect(zero.input.sampling.repetitionPenalty).toBeUndefined();
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: null }).input.sampling.logprobs).toBeUndefined();
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', logprobs: false }).input.sampling.logprobs).toBeUndefined();
  });

  it('rejects a non-object body', () => {
    expect(paramOf(() => parseCompletionRequest([1]))).toBe('<none>');
  });
});

describe('parseChatRequest', () => {
  it('flattens text parts and prefers max_completion_tokens', () => {
    const req = parseChatRequest({
      model: 'm', max_tokens: 3, max_completion_tokens: 9,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }],
    });
    expect(req.input.messages).toEqual([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'ab' }]);
    expect(req.input.sampling.maxTokens).toBe(9);
    expect(req.input.api).toBe('chat.completions');
  });

  it.each([
    [{ model: 'm' }, 'messages'],
    [{ model: 'm', messages: [] }, 'messages'],
    [{ model: 'm', messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
    [{ model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }, 'messages[0].content'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], n: 17 }, 'n'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], logprobs: 3 }, 'logprobs'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 'top_logprobs'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], logprobs: false, top_logprobs: 2 }, 'top_logprobs'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], frequency_penalty: 3 }, 'frequency_penalty'],
  ])('rejects %j naming %s', (body, param) => {
    expect(paramOf(() => parseChatRequest(body))).toBe(param);
  });

  it('maps logprobs: true and top_logprobs onto sampling.logprobs', () => {
    const messages = [{ role: 'user', content: 'x' }];
    expect(parseChatRequest({ model: 'm', messages, logprobs: true, top_logprobs: 4 }).input.sampling.logprobs).toBe(4);
    expect(parseChatRequest({ model: 'm', messages, logprobs: true }).input.sampling.logprobs).toBe(0);
    expect(parseChatRequest({ model: 'm', messages, logprobs: false }).input.sampling.logprobs).toBeUndefined();
    expect(parseChatRequest({ model: 'm', messages, n: 2 }).n).toBe(2);
  });
});

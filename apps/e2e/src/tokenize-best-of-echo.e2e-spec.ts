/**
 * vLLM's /tokenize and /detokenize, and completions' best_of and echo, end to end with the real default model
 * (SmolLM2-135M-Instruct, `--model smollm2`) behind the real gateway: a tokenize / detokenize round trip, chat
 * messages (with tools) counted as many tokens as generation's prompt_tokens, the 400 / 404s; best_of returns the
 * candidate with the highest mean token logprob (the candidates seen through n = best_of with the same seed) and
 * counts every candidate's tokens; echo puts the prompt before the text (streamed: in the first chunk).
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import type { common, inference } from '@inlaid/proto';
import { randomBytes } from 'node:crypto';
import { inferenceClient } from './support/grpc-clients';
import { SmolStack, startSmolStack, stopSmolStack } from './support/smollm2-stack';
import { postSse } from './support/sse';

jest.setTimeout(240_000);

const PREFIX = `e2e${randomBytes(4).toString('hex')}`;
let stack: SmolStack | undefined;
let url: string;
let base: string;

beforeAll(async () => {
  stack = await startSmolStack('tokenize', PREFIX);
  ({ url, base } = stack);
});

afterAll(async () => {
  await stopSmolStack(stack);
});

type Json = Record<string, any>;

async function post(path: string, body: object): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}

const MESSAGES = [{ role: 'user', content: 'What is the weather in Oslo?' }];
const TOOLS = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];

describe('/tokenize and /detokenize', () => {
  it('a prompt round-trips; count and max_model_len as vLLM reports them', async () => {
    const prompt = 'The quick brown fox jumps over the lazy dog.';
    const tok = await post('tokenize', { model: base, prompt, return_token_strs: true });
    expect(tok.status).toBe(200);
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Json[] };
    expect(tok.json['max_model_len']).toBe(models.data.find((m) => m['id'] === base)?.['max_model_len']);
    expect(tok.json['count']).toBe(tok.json['tokens'].length);
    expect(tok.json['token_strs']).toHaveLength(tok.json['count']);
    const gen = await post('v1/completions', { model: base, prompt, max_tokens: 1 });
    expect(tok.json['count']).toBe(gen.json['usage'].prompt_tokens);
    const detok = await post('detokenize', { model: base, tokens: tok.json['tokens'] });
    expect(detok).toEqual({ status: 200, json: { prompt } });
    const noModel = await post('tokenize', { prompt });
    expect(noModel.json['tokens']).toEqual(tok.json['tokens']); // the base model by default
  });

  it('chat messages with tools count as many tokens as the chat completion prompt; add_generation_prompt false is a prefix', async () => {
    const tok = await post('tokenize', { model: base, messages: MESSAGES, tools: TOOLS });
    expect(tok.status).toBe(200);
    const gen = await post('v1/chat/completions', { model: base, messages: MESSAGES, tools: TOOLS, max_tokens: 1 });
    expect(gen.status).toBe(200);
    expect(tok.json['count']).toBe(gen.json['usage'].prompt_tokens);
    const bare = await post('tokenize', { model: base, messages: MESSAGES, tools: TOOLS, add_generation_prompt: false });
    expect(bare.json['count']).toBeLessThan(tok.json['count']);
    expect(tok.json['tokens'].slice(0, bare.json['count'])).toEqual(bare.json['tokens']);
    const text = await post('detokenize', { model: base, tokens: tok.json['tokens'] });
    expect(text.json['prompt']).toContain('<tools>');
    expect(text.json['prompt']).toContain('What is the weather in Oslo?');
  });

  it('an unknown model is 404, an id outside the vocabulary or a bad body 400', async () => {
    const unknown = await post('tokenize', { model: 'no-such-model', prompt: 'x' });
    expect(unknown.status).toBe(404);
    expect(unknown.json['error']).toMatchObject({ code: 'model_not_found', param: 'model' });
    expect((await post('detokenize', { model: 'no-such-model', tokens: [1] })).status).toBe(404);
    const vocab = await post('detokenize', { model: base, tokens: [1, 10_000_000] });
    expect(vocab.status).toBe(400);
    expect(vocab.json['error']).toMatchObject({ param: 'tokens' });
    expect(vocab.json['error'].message).toContain('outside the vocabulary');
    const bad = await post('tokenize', { model: base, prompt: 'x', messages: MESSAGES });
    expect([bad.status, bad.json['error'].param]).toEqual([400, 'prompt']);
  });
});

describe('gRPC Inference Tokenize / Detokenize', () => {
  it('gives the ids /tokenize gives (chat with tools included) and round-trips; bad ids are INVALID_ARGUMENT naming token_ids', async () => {
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    try {
      const tokenize = (req: Partial<inference.TokenizeTextRequest>) =>
        new Promise<common.TokenizeResponse>((resolve, reject) =>
          client.tokenize({ model: base, prompt: '', messages: [], returnTokenStrs: false, ...req }, new Metadata(), (e, r) => (e ? reject(e) : resolve(r))),
        );
      const detokenize = (tokenIds: number[]) =>
        new Promise<common.DetokenizeResponse>((resolve, reject) =>
          client.detokenize({ model: base, tokenIds }, new Metadata(), (e, r) => (e ? reject(e) : resolve(r))),
        );
      const tools = { functions: [{ name: 'get_weather', description: '', parameters: JSON.stringify(TOOLS[0]?.function.parameters) }], choice: 'auto', function: '' };
      const chat = await tokenize({ messages: MESSAGES, tools });
      const http = await post('tokenize', { model: base, messages: MESSAGES, tools: TOOLS });
      expect(chat.tokenIds).toEqual(http.json['tokens']);
      expect(chat.maxModelLen).toBe(http.json['max_model_len']);
      const prompt = await tokenize({ model: '', prompt: 'Hello there' });
      expect((await detokenize(prompt.tokenIds)).prompt).toBe('Hello there');
      const err = (await detokenize([10_000_000]).catch((e: unknown) => e)) as ServiceError;
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.metadata.get('x-inlaid-param')).toEqual(['token_ids']);
      const unknown = (await tokenize({ model: 'no-such-model', prompt: 'x' }).catch((e: unknown) => e)) as ServiceError;
      expect(unknown.code).toBe(status.NOT_FOUND);
    } finally {
      client.close();
    }
  });
});

describe('best_of', () => {
  const BODY = { prompt: 'Write a word:', max_tokens: 6, temperature: 1, seed: 1234, logprobs: 0 };
  const mean = (lp: number[]) => lp.reduce((a, b) => a + b, 0) / lp.length;

  it('returns the candidate with the highest mean token logprob and counts every candidate in usage', async () => {
    // n = best_of with the same seed runs the same candidates (choice i's seed derives from seed and i) and shows them all
    const all = await post('v1/completions', { model: base, ...BODY, n: 4 });
    expect(all.status).toBe(200);
    const candidates = (all.json['choices'] as Json[]).map((c) => ({ text: c['text'] as string, score: mean(c['logprobs'].token_logprobs) }));
    expect(new Set(candidates.map((c) => c.text)).size).toBeGreaterThan(1); // the ranking has something to choose
    const best = await post('v1/completions', { model: base, ...BODY, n: 1, best_of: 4 });
    expect(best.status).toBe(200);
    expect(best.json['choices']).toHaveLength(1);
    const choice = best.json['choices'][0] as Json;
    expect(choice['index']).toBe(0);
    const top = Math.max(...candidates.map((c) => c.score));
    expect(mean(choice['logprobs'].token_logprobs)).toBeCloseTo(top, 3);
    expect(candidates.find((c) => Math.abs(c.score - top) < 1e-3)?.text).toBe(choice['text']);
    expect(best.json['usage'].completion_tokens).toBe(all.json['usage'].completion_tokens);

    const two = await post('v1/completions', { model: base, ...BODY, n: 2, best_of: 4 });
    const scores = (two.json['choices'] as Json[]).map((c) => mean(c['logprobs'].token_logprobs));
    const ranked = candidates.map((c) => c.score).sort((a, b) => b - a);
    expect(scores[0]).toBeCloseTo(ranked[0] as number, 3);
    expect(scores[1]).toBeCloseTo(ranked[1] as number, 3);
  });

  it('is refused with stream, or below n', async () => {
    const streamed = await post('v1/completions', { model: base, prompt: 'x', best_of: 2, stream: true });
    expect([streamed.status, streamed.json['error'].param]).toEqual([400, 'best_of']);
    expect((await post('v1/completions', { model: base, prompt: 'x', n: 3, best_of: 2 })).status).toBe(400);
  });
});

describe('echo', () => {
  const BODY = { prompt: 'The capital of France is', max_tokens: 5, temperature: 0 };

  it('puts the prompt before the text, streamed (first chunk) and not', async () => {
    const plain = await post('v1/completions', { model: base, ...BODY });
    const echoed = await post('v1/completions', { model: base, ...BODY, echo: true, n: 2 });
    expect(echoed.status).toBe(200);
    for (const c of echoed.json['choices'] as Json[]) expect(c['text']).toBe(BODY.prompt + plain.json['choices'][0].text);
    expect(echoed.json['usage'].prompt_tokens).toBe(plain.json['usage'].prompt_tokens);

    const streamed = await postSse(url, 'completions', { model: base, ...BODY, echo: true, stream: true });
    expect(streamed.status).toBe(200);
    const texts = streamed.chunks.map((c) => c['choices'][0].text as string);
    expect(texts[0]).toBe(BODY.prompt);
    expect(texts.join('')).toBe(BODY.prompt + plain.json['choices'][0].text);
  });

  it('with logprobs is a 400 that says why', async () => {
    const res = await post('v1/completions', { model: base, ...BODY, echo: true, logprobs: 1 });
    expect([res.status, res.json['error'].param]).toEqual([400, 'echo']);
    expect(res.json['error'].message).toContain("prompt tokens' logprobs");
  });
});

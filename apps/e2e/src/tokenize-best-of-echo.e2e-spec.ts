/**
 * vLLM's /tokenize and /detokenize, and completions' best_of and echo, end to end with the real default model
 * (SmolLM2-135M-Instruct, `--model smollm2`) behind the real gateway: a tokenize / detokenize round trip, chat
 * messages (with tools) counted as many tokens as generation's prompt_tokens, the 400 / 404s; best_of returns the
 * candidate with the highest mean token logprob (the candidates seen through n = best_of with the same seed) and
 * counts every candidate's tokens, and gRPC Generate's best_of returns the same choices; echo puts the prompt before
 * the text (streamed: in the first chunk), with logprobs the prompt tokens' logprobs first, equal to vLLM's
 * prompt_logprobs (also on chat and gRPC), and they add up. gRPC Generate's add_special_tokens on messages counts the
 * prompt as /tokenize does.
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import type { common, inference } from '@inlaid/proto';
import { randomBytes } from 'node:crypto';
import { generate, inferenceClient } from './support/grpc-clients';
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

  it('tools need messages (/tokenize and /v1/completions refuse them); tools: [] is refused as chat completions refuses it; add_special_tokens on messages', async () => {
    const withTools = await post('tokenize', { model: base, prompt: 'x', tools: TOOLS });
    expect([withTools.status, withTools.json['error'].param]).toEqual([400, 'tools']);
    const completion = await post('v1/completions', { model: base, prompt: 'x', tools: TOOLS, tool_choice: 'auto', max_tokens: 1 });
    expect([completion.status, completion.json['error'].param, completion.json['error'].type]).toEqual([400, 'tools', 'invalid_request_error']);
    expect(completion.json['error'].message).toContain('/v1/chat/completions');
    const empty = await post('tokenize', { model: base, messages: MESSAGES, tools: [] });
    const chat = await post('v1/chat/completions', { model: base, messages: MESSAGES, tools: [], max_tokens: 1 });
    expect([empty.status, empty.json['error'].param]).toEqual([chat.status, chat.json['error'].param]);
    expect(empty.status).toBe(400);
    // vLLM's default for messages adds no special tokens on top of the template; SmolLM2's tokenizer adds none anyway
    const plain = await post('tokenize', { model: base, messages: MESSAGES });
    for (const add of [false, true]) {
      const res = await post('tokenize', { model: base, messages: MESSAGES, add_special_tokens: add });
      expect([res.status, res.json['tokens']]).toEqual([200, plain.json['tokens']]);
    }
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
      expect((await tokenize({ messages: MESSAGES, addSpecialTokens: true })).tokenIds).toEqual((await tokenize({ messages: MESSAGES })).tokenIds);
      const empty = (await tokenize({ messages: MESSAGES, tools: { functions: [], choice: '', function: '' } }).catch((e: unknown) => e)) as ServiceError;
      expect([empty.code, empty.metadata.get('x-inlaid-param')]).toEqual([status.INVALID_ARGUMENT, ['tools.functions']]);
    } finally {
      client.close();
    }
  });
});

describe('gRPC Generate with messages', () => {
  it('gRPC Generate with messages: prompt_tokens equal HTTP chat usage and /tokenize count for add_special_tokens true/false/unset (SmolLM2 adds none: agreement only; generate-special-tokens.spec checks the pass-through)', async () => {
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    try {
      const sampling = { maxTokens: 1, temperature: 0, stop: [], stopTokenIds: [], ignoreEos: true };
      for (const add of [true, false, undefined]) {
        const out = await generate(client, { model: base, messages: MESSAGES, sampling, ...(add === undefined ? {} : { addSpecialTokens: add }) });
        const flag = add === undefined ? {} : { add_special_tokens: add };
        const http = await post('v1/chat/completions', { model: base, messages: MESSAGES, max_tokens: 1, ...flag });
        const tok = await post('tokenize', { model: base, messages: MESSAGES, ...flag });
        expect([http.status, tok.status]).toEqual([200, 200]);
        expect(out[0]?.promptTokens).toBe(http.json['usage'].prompt_tokens);
        expect(out[0]?.promptTokens).toBe(tok.json['count']);
      }
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

  it('on gRPC Generate: the n best candidates, best first, the same choices as HTTP; refusals name best_of', async () => {
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    const sampling = { maxTokens: BODY.max_tokens, temperature: BODY.temperature, seed: BODY.seed, stop: [], stopTokenIds: [], ignoreEos: false };
    const byChoice = (out: inference.GenerateResponse[]) => {
      const choices = new Map<number, { text: string; lp: number[]; order: number[] }>();
      out.forEach((m, k) => {
        const c = choices.get(m.index) ?? { text: '', lp: [], order: [] };
        choices.set(m.index, { text: c.text + m.text, lp: [...c.lp, ...(m.logprobs?.tokens.map((t) => t.sampled?.logprob ?? NaN) ?? [])], order: [...c.order, k] });
      });
      return [...choices.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
    };
    try {
      const all = byChoice(await generate(client, { model: base, prompt: BODY.prompt, n: 4, sampling: { ...sampling, logprobs: 0 } }));
      expect(all).toHaveLength(4);
      const ranked = all.map((c) => mean(c.lp)).sort((a, b) => b - a);
      const out = await generate(client, { model: base, prompt: BODY.prompt, n: 2, bestOf: 4, sampling: { ...sampling, logprobs: 0 } });
      const two = byChoice(out);
      expect(two).toHaveLength(2);
      expect(mean(two[0]?.lp ?? [])).toBeCloseTo(ranked[0] as number, 3);
      expect(mean(two[1]?.lp ?? [])).toBeCloseTo(ranked[1] as number, 3);
      expect(two[1]?.order[0]).toBeGreaterThan(two[0]?.order.at(-1) ?? Infinity); // each kept choice's messages together
      const http = await post('v1/completions', { model: base, ...BODY, n: 2, best_of: 4 });
      expect(two.map((c) => c.text)).toEqual((http.json['choices'] as Json[]).map((c) => c['text']));
      // without sampling.logprobs the ranking still works and no logprobs go out
      const bare = await generate(client, { model: base, prompt: BODY.prompt, bestOf: 4, sampling });
      expect(bare.every((m) => m.index === 0 && m.logprobs === undefined)).toBe(true);
      expect(bare.map((m) => m.text).join('')).toBe(two[0]?.text);
      for (const req of [{ n: 3, bestOf: 2, prompt: 'x' }, { bestOf: 2, messages: MESSAGES }, { bestOf: 17, prompt: 'x' }]) {
        const err = (await generate(client, { model: base, sampling, ...req }).catch((e: unknown) => e)) as ServiceError;
        expect([err.code, err.metadata.get('x-inlaid-param')]).toEqual([status.INVALID_ARGUMENT, ['best_of']]);
      }
    } finally {
      client.close();
    }
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

  it('with logprobs covers the prompt tokens (first null), equal to prompt_logprobs; the logprobs add up', async () => {
    const tok = await post('tokenize', { model: base, prompt: BODY.prompt });
    const ids = tok.json['tokens'] as number[];
    const p = ids.length;
    const plain = await post('v1/completions', { model: base, ...BODY, logprobs: 2 });
    const res = await post('v1/completions', { model: base, ...BODY, echo: true, logprobs: 2, prompt_logprobs: 2 });
    expect(res.status).toBe(200);
    const choice = res.json['choices'][0] as Json;
    const lp = choice['logprobs'] as Json;
    const generated = plain.json['choices'][0].logprobs as Json;
    expect(choice['text']).toBe(BODY.prompt + plain.json['choices'][0].text);
    expect(lp['tokens']).toHaveLength(p + generated['tokens'].length);
    expect([lp['token_logprobs'][0], lp['top_logprobs'][0], lp['text_offset'][0]]).toEqual([null, null, 0]);
    // vLLM's prompt_logprobs: null, then {id: {logprob, rank, decoded_token}} with the prompt token and the top 2
    const prompt = choice['prompt_logprobs'] as Array<Record<string, Json> | null>;
    expect(prompt).toHaveLength(p);
    expect(prompt[0]).toBeNull();
    for (let i = 1; i < p; i++) {
      const entry = prompt[i] as Record<string, Json>;
      const own = entry[String(ids[i])] as Json;
      expect(own['decoded_token']).toBe(lp['tokens'][i]);
      expect(own['logprob']).toBeCloseTo(lp['token_logprobs'][i], 5);
      expect(own['rank']).toBeGreaterThanOrEqual(1);
      const ranked = Object.values(entry).filter((e) => e !== own || own['rank'] <= 2).sort((a, b) => a['rank'] - b['rank']);
      expect(ranked.slice(0, 2).map((e) => e['rank'])).toEqual([1, 2]);
      for (const e of Object.values(entry)) expect(lp['top_logprobs'][i][e['decoded_token']]).toBeCloseTo(e['logprob'], 5);
      expect(own['rank'] === 1).toBe(own['logprob'] >= Math.max(...Object.values(entry).map((e) => e['logprob'] as number)) - 1e-6);
    }
    // the generated part is the plain request's, its offsets from the end of the echoed prompt
    lp['token_logprobs'].slice(p).forEach((v: number, i: number) => expect(v).toBeCloseTo(generated['token_logprobs'][i], 3));
    expect(lp['text_offset'][p]).toBe(BODY.prompt.length);
    lp['tokens'].forEach((t: string, i: number) => expect((choice['text'] as string).slice(lp['text_offset'][i], lp['text_offset'][i] + t.length)).toBe(t));
    // the sums: echo's logprobs = the prompt's (prompt_logprobs) + the completion's; and scoring prompt + completion
    // as one prompt gives the same total (the chain rule), when it tokenizes to the same ids
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const promptSum = sum(prompt.slice(1).map((e, i) => (e as Record<string, Json>)[String(ids[i + 1])]?.['logprob'] as number));
    const echoSum = sum(lp['token_logprobs'].slice(1) as number[]);
    expect(echoSum).toBeCloseTo(promptSum + sum(generated['token_logprobs'] as number[]), 3);
    const whole = await post('tokenize', { model: base, prompt: choice['text'] });
    expect(whole.json['count']).toBe(lp['tokens'].length); // the completion re-tokenizes to its own tokens
    const scored = await post('v1/completions', { model: base, prompt: choice['text'], max_tokens: 1, prompt_logprobs: 0 });
    const scoredSum = sum((scored.json['choices'][0].prompt_logprobs as Array<Record<string, Json> | null>).slice(1).map((e, i) => (e as Record<string, Json>)[String(whole.json['tokens'][i + 1])]?.['logprob'] as number));
    expect(scoredSum).toBeCloseTo(echoSum, 2);
  });

  it('with logprobs streamed: the first chunk is the prompt with its logprobs, as the unstreamed ones', async () => {
    const whole = await post('v1/completions', { model: base, ...BODY, echo: true, logprobs: 1 });
    const streamed = await postSse(url, 'completions', { model: base, ...BODY, echo: true, logprobs: 1, stream: true });
    expect(streamed.status).toBe(200);
    const choices = streamed.chunks.map((c) => c['choices'][0] as Json);
    expect(choices[0]?.['text']).toBe(BODY.prompt);
    expect(choices[0]?.['logprobs'].token_logprobs[0]).toBeNull();
    const lp = whole.json['choices'][0].logprobs as Json;
    const joined = choices.flatMap((c) => c['logprobs'].token_logprobs as Array<number | null>);
    expect(joined).toHaveLength(lp['token_logprobs'].length);
    joined.forEach((v, i) => (v === null ? expect(lp['token_logprobs'][i]).toBeNull() : expect(v).toBeCloseTo(lp['token_logprobs'][i], 3)));
    expect(choices.flatMap((c) => c['logprobs'].text_offset)).toEqual(lp['text_offset']);
    // n = 2 (and best_of = 3): one choice scores the prompt, every choice's first chunk / body carries the same logprobs
    const promptLp = (lp['token_logprobs'] as Array<number | null>).slice(0, (choices[0]?.['logprobs'].tokens as string[]).length);
    const two = await postSse(url, 'completions', { model: base, ...BODY, echo: true, logprobs: 1, stream: true, n: 2 });
    for (const i of [0, 1]) {
      const first = two.chunks.map((c) => c['choices'][0] as Json).find((c) => c['index'] === i) as Json;
      expect(first['text']).toBe(BODY.prompt);
      (first['logprobs'].token_logprobs as Array<number | null>).forEach((v, k) => (v === null ? expect(promptLp[k]).toBeNull() : expect(v).toBeCloseTo(promptLp[k] as number, 3)));
    }
    const best = await post('v1/completions', { model: base, ...BODY, echo: true, logprobs: 1, best_of: 3, n: 2 });
    for (const c of best.json['choices'] as Json[]) {
      (c['logprobs'].token_logprobs as Array<number | null>).slice(0, promptLp.length).forEach((v, k) => (v === null ? expect(promptLp[k]).toBeNull() : expect(v).toBeCloseTo(promptLp[k] as number, 3)));
    }
  });

  it('prompt_logprobs on chat (on the response), refused with stream; gRPC sends them on the first message', async () => {
    const chat = await post('v1/chat/completions', { model: base, messages: MESSAGES, max_tokens: 1, prompt_logprobs: 1 });
    expect(chat.status).toBe(200);
    expect(chat.json['prompt_logprobs']).toHaveLength(chat.json['usage'].prompt_tokens);
    expect(chat.json['prompt_logprobs'][0]).toBeNull();
    const streamed = await post('v1/chat/completions', { model: base, messages: MESSAGES, prompt_logprobs: 1, stream: true });
    expect([streamed.status, streamed.json['error'].param]).toEqual([400, 'prompt_logprobs']);
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    try {
      const out = await generate(client, { model: base, prompt: BODY.prompt, sampling: { maxTokens: 2, temperature: 0, ignoreEos: true, stop: [], stopTokenIds: [], promptLogprobs: 1 } });
      const first = out[0]?.promptLogprobs?.tokens ?? [];
      expect(first).toHaveLength(out[0]?.promptTokens ?? -1);
      expect(first[0]?.sampled?.rank).toBeUndefined();
      expect(first.slice(1).every((t) => (t.sampled?.rank ?? 0) >= 1 && t.top.length === 1)).toBe(true);
      expect(out.slice(1).every((m) => (m.promptLogprobs?.tokens.length ?? 0) === 0)).toBe(true);
    } finally {
      client.close();
    }
  });
});

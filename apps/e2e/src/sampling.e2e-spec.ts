/**
 * Sampling features end to end (real gateway + real worker on the shared base-only stack): logprobs in
 * OpenAI's completions and chat shapes, streamed and not; n > 1 choices (HTTP and gRPC Generate); presence /
 * frequency / repetition penalties; logit_bias, min_p and min_tokens; usage.prompt_tokens_details.cached_tokens
 * from the worker's prefix cache; and the 400s / INVALID_ARGUMENT for out-of-range values (values that would round
 * to 0 as a float included).
 */
import { ServiceError, status } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { BaseOnlyStack, startBaseOnlyStack, stopBaseOnlyStack } from './support/base-only-stack';
import { generate, inferenceClient } from './support/grpc-clients';
import { postSse } from './support/sse';

jest.setTimeout(120_000);

const PREFIX = `e2e${randomBytes(4).toString('hex')}`;
let stack: BaseOnlyStack | undefined;
let url: string;
let base: string;

beforeAll(async () => {
  stack = await startBaseOnlyStack(PREFIX);
  ({ url, base } = stack);
});

afterAll(async () => {
  await stopBaseOnlyStack(stack);
});

type Json = Record<string, any>;

async function post(path: string, body: object): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}

/** The JSON chunks of an SSE stream and how many [DONE] events it held. */
async function stream(path: string, body: object): Promise<{ chunks: Json[]; dones: number }> {
  const answer = await postSse(url, path, body);
  expect(answer.status).toBe(200);
  return answer;
}

const GREEDY = { temperature: 0, max_tokens: 8, ignore_eos: true };

describe('logprobs', () => {
  it('completions: OpenAI shape, a greedy token is the max of its top_logprobs, streamed = not streamed', async () => {
    const body = { model: base, prompt: 'The capital of France is', logprobs: 3, ...GREEDY };
    const { status: code, json } = await post('completions', body);
    expect(code).toBe(200);
    const choice = json['choices'][0];
    const lp = choice.logprobs as { tokens: string[]; token_logprobs: number[]; top_logprobs: Array<Record<string, number>>; text_offset: number[] };
    expect(Object.keys(lp).sort()).toEqual(['text_offset', 'token_logprobs', 'tokens', 'top_logprobs']);
    expect(lp.tokens).toHaveLength(8);
    expect(lp.token_logprobs).toHaveLength(8);
    expect(lp.text_offset).toHaveLength(8);
    expect(lp.text_offset[0]).toBe(0);
    for (let i = 0; i < 8; i++) {
      const top = lp.top_logprobs[i] as Record<string, number>;
      const values = Object.values(top);
      expect(values.length).toBeGreaterThanOrEqual(1);
      expect(values.length).toBeLessThanOrEqual(4); // top 3, plus the sampled token when it is not among them
      expect(lp.token_logprobs[i]).toBeLessThanOrEqual(0);
      expect(lp.token_logprobs[i]).toBe(Math.max(...values)); // greedy: the sampled token is the most likely
      expect(top[lp.tokens[i] as string]).toBe(lp.token_logprobs[i]);
      if (i > 0) expect(lp.text_offset[i]).toBe((lp.text_offset[i - 1] as number) + [...(lp.tokens[i - 1] as string)].length);
    }
    // whole-character tokens spell the completion (a token that is part of a character shows as U+FFFD, and a
    // special token shows its name, which the text leaves out)
    if (!lp.tokens.some((t) => t.includes('\ufffd') || /^<\|.*\|>$/.test(t))) expect(lp.tokens.join('')).toBe(choice.text);

    const streamed = await stream('completions', body);
    expect(streamed.dones).toBe(1);
    const withTokens = streamed.chunks.filter((c) => c['choices'].length > 0);
    const tokens = withTokens.flatMap((c) => c['choices'][0].logprobs?.tokens ?? []);
    const values = withTokens.flatMap((c) => c['choices'][0].logprobs?.token_logprobs ?? []);
    const offsets = withTokens.flatMap((c) => c['choices'][0].logprobs?.text_offset ?? []);
    expect(tokens).toEqual(lp.tokens);
    expect(values).toEqual(lp.token_logprobs);
    expect(offsets).toEqual(lp.text_offset);
  });

  it('chat: logprobs true + top_logprobs in OpenAI chat shape, streamed chunks carry their own tokens', async () => {
    const body = { model: base, messages: [{ role: 'user', content: 'Hello!' }], logprobs: true, top_logprobs: 2, ...GREEDY };
    const { status: code, json } = await post('chat/completions', body);
    expect(code).toBe(200);
    const choice = json['choices'][0];
    const content = choice.logprobs.content as Array<{ token: string; logprob: number; bytes: number[]; top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }> }>;
    expect(choice.logprobs.refusal).toBeNull();
    expect(content).toHaveLength(json['usage'].completion_tokens);
    for (const c of content) {
      expect(Object.keys(c).sort()).toEqual(['bytes', 'logprob', 'token', 'top_logprobs']);
      expect(c.top_logprobs).toHaveLength(2);
      expect(c.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(c.top_logprobs[1]!.logprob);
      expect(c.logprob).toBe(Math.max(...c.top_logprobs.map((t) => t.logprob)));
      expect(c.top_logprobs[0]!.token).toBe(c.token);
      expect(c.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256)).toBe(true);
      if (!c.token.includes('\ufffd')) expect(Buffer.from(c.bytes).toString('utf8')).toBe(c.token);
    }
    const streamed = await stream('chat/completions', body);
    expect(streamed.dones).toBe(1);
    const perChunk = streamed.chunks.filter((c) => c['choices'].length > 0).map((c) => c['choices'][0]);
    expect(perChunk[0].logprobs).toBeNull(); // the role chunk has no tokens
    expect(perChunk.flatMap((c) => c.logprobs?.content ?? []).map((c: { token: string }) => c.token)).toEqual(content.map((c) => c.token));
  });

  it('no logprobs asked: logprobs null', async () => {
    const { json } = await post('completions', { model: base, prompt: 'Hi', ...GREEDY });
    expect(json['choices'][0].logprobs).toBeNull();
  });
});

describe('n > 1', () => {
  it('completions: n choices with index, usage sums completion tokens, prompt counted once', async () => {
    const body = { model: base, prompt: 'Once upon a time', n: 2, temperature: 1, seed: 7, max_tokens: 6, ignore_eos: true, logprobs: 1 };
    const { status: code, json } = await post('completions', body);
    expect(code).toBe(200);
    expect(json['choices'].map((c: Json) => c['index'])).toEqual([0, 1]);
    expect(json['choices'].every((c: Json) => c['logprobs'].tokens.length === 6)).toBe(true);
    expect(json['usage'].completion_tokens).toBe(12);
    const one = await post('completions', { ...body, n: 1 });
    expect(json['usage'].prompt_tokens).toBe(one.json['usage'].prompt_tokens);
    expect(json['choices'][0].text).toBe(one.json['choices'][0].text); // choice 0 keeps the seed
    const again = await post('completions', body);
    expect(again.json['choices'].map((c: Json) => c['text'])).toEqual(json['choices'].map((c: Json) => c['text'])); // seeded: reproducible
  });

  it('chat stream: role chunk and finish per choice, one [DONE], usage summed', async () => {
    const body = { model: base, messages: [{ role: 'user', content: 'Hi' }], n: 2, max_tokens: 5, ignore_eos: true, stream_options: { include_usage: true } };
    const { chunks, dones } = await stream('chat/completions', body);
    expect(dones).toBe(1);
    const choices = chunks.filter((c) => c['choices'].length > 0).map((c) => c['choices'][0]);
    expect(choices.filter((c) => c.delta.role === 'assistant').map((c) => c.index).sort()).toEqual([0, 1]);
    expect(choices.filter((c) => c.finish_reason !== null).map((c) => c.index).sort()).toEqual([0, 1]);
    expect(chunks.every((c) => new Set([chunks[0]!['id']]).has(c['id']))).toBe(true);
    const usage = chunks[chunks.length - 1]!['usage'];
    expect(usage.completion_tokens).toBe(10);
  });

  it('gRPC Generate: n choices with index and per-token logprobs', async () => {
    const client = inferenceClient((stack as BaseOnlyStack).h.gateway.grpcAddr);
    try {
      const out = await generate(client, {
        model: base,
        prompt: 'The capital of',
        n: 2,
        sampling: { maxTokens: 4, temperature: 0, ignoreEos: true, stop: [], stopTokenIds: [], logprobs: 2 },
      });
      expect(new Set(out.map((m) => m.index))).toEqual(new Set([0, 1]));
      expect(new Set(out.map((m) => m.requestId)).size).toBe(1);
      for (const m of out) {
        expect(m.logprobs?.tokens).toHaveLength(m.tokenIds.length);
        m.logprobs?.tokens.forEach((t, i) => {
          expect(t.sampled?.tokenId).toBe(m.tokenIds[i]);
          expect(t.top).toHaveLength(2);
          expect(t.sampled?.logprob).toBe(t.top[0]?.logprob); // greedy
        });
      }
      const byIndex = [0, 1].map((i) => out.filter((m) => m.index === i).flatMap((m) => m.tokenIds));
      expect(byIndex[0]).toHaveLength(4);
      expect(byIndex[0]).toEqual(byIndex[1]); // greedy choices agree
      const bad = await generate(client, { model: base, prompt: 'x', n: 17 }).catch((e: ServiceError) => e);
      expect((bad as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      const badLp = await generate(client, { model: base, prompt: 'x', sampling: { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false, logprobs: 21 } }).catch(
        (e: ServiceError) => e,
      );
      expect((badLp as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      expect((badLp as ServiceError).details).toContain('logprobs');
      const tiny = { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false, temperature: Math.fround(1e-40) }; // a denormal float
      const badT = await generate(client, { model: base, prompt: 'x', sampling: tiny }).catch((e: ServiceError) => e);
      expect((badT as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      expect((badT as ServiceError).details).toContain('temperature');
    } finally {
      client.close();
    }
  });
});

describe('cached prompt tokens', () => {
  // a prompt of several 16-token blocks, new to the worker's prefix cache (random words first)
  const longPrompt = () => `${randomBytes(6).toString('hex')} ${'the quick brown fox jumps over the lazy dog and '.repeat(6)}`;

  it('a repeated long prompt reports cached_tokens > 0, non-streamed and streamed', async () => {
    const body = { model: base, prompt: longPrompt(), ...GREEDY, max_tokens: 2 };
    const first = await post('completions', body);
    expect(first.status).toBe(200);
    const usage = first.json['usage'];
    expect(usage.prompt_tokens).toBeGreaterThan(32);
    expect(usage.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    const again = await post('completions', body);
    const cached = again.json['usage'].prompt_tokens_details.cached_tokens as number;
    expect(cached).toBeGreaterThan(0);
    expect(cached).toBeLessThan(usage.prompt_tokens);
    expect(again.json['choices'][0].text).toBe(first.json['choices'][0].text);
    const { chunks } = await stream('completions', { ...body, stream_options: { include_usage: true } });
    expect(chunks[chunks.length - 1]!['usage'].prompt_tokens_details).toEqual({ cached_tokens: cached });
  });

  it('n > 1: the prompt counts once, so cached_tokens is at most prompt_tokens', async () => {
    const body = { model: base, messages: [{ role: 'user', content: longPrompt() }], ...GREEDY, max_tokens: 2 };
    await post('chat/completions', body); // warm the cache
    const { status: code, json } = await post('chat/completions', { ...body, n: 3 });
    expect(code).toBe(200);
    const usage = json['usage'];
    expect(usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    expect(usage.prompt_tokens_details.cached_tokens).toBeLessThan(usage.prompt_tokens);
  });

  it('gRPC Generate carries each choice\'s cached_tokens', async () => {
    const client = inferenceClient((stack as BaseOnlyStack).h.gateway.grpcAddr);
    try {
      const req = { model: base, prompt: longPrompt(), sampling: { maxTokens: 2, temperature: 0, ignoreEos: true, stop: [], stopTokenIds: [] } };
      const cold = await generate(client, req);
      expect(cold.every((m) => m.cachedTokens === 0)).toBe(true);
      const warm = await generate(client, req);
      expect(warm[0]?.cachedTokens).toBeGreaterThan(0);
      expect(warm[0]?.cachedTokens).toBeLessThan(warm[0]?.promptTokens ?? 0);
    } finally {
      client.close();
    }
  });
});

describe('penalties', () => {
  it('change greedy output on a repetitive model and are accepted together', async () => {
    const body = { model: base, prompt: 'a a a a a a', temperature: 0, max_tokens: 24, ignore_eos: true };
    const plain = await post('completions', body);
    const penalized = await post('completions', { ...body, presence_penalty: 2, frequency_penalty: 2, repetition_penalty: 1.5 });
    expect(penalized.status).toBe(200);
    expect(penalized.json['usage'].completion_tokens).toBe(24);
    expect(penalized.json['choices'][0].text).not.toBe(plain.json['choices'][0].text);
  });

  it.each([
    ['completions', { logprobs: 21 }, 'logprobs'],
    ['completions', { n: 17 }, 'n'],
    ['completions', { presence_penalty: 2.5 }, 'presence_penalty'],
    ['completions', { frequency_penalty: -3 }, 'frequency_penalty'],
    ['completions', { repetition_penalty: 0 }, 'repetition_penalty'],
    ['completions', { repetition_penalty: 1e-50 }, 'repetition_penalty'], // 0 as a float: the worker refused it
    ['completions', { temperature: 1e-50 }, 'temperature'], // 0 as a float: silently greedy
    ['chat/completions', { temperature: 1e-40 }, 'temperature'], // a denormal float
    ['completions', { top_p: 0 }, 'top_p'],
    ['chat/completions', { top_logprobs: 3 }, 'top_logprobs'],
    ['chat/completions', { logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
  ])('%s %j: 400 naming %s', async (path, extra, param) => {
    const body = path === 'completions' ? { model: base, prompt: 'x' } : { model: base, messages: [{ role: 'user', content: 'x' }] };
    const { status: code, json } = await post(path, { ...body, ...extra });
    expect(code).toBe(400);
    expect(json['error'].param).toBe(param);
    expect(json['error'].type).toBe('invalid_request_error');
    expect(json['error'].message).toContain(param);
  });
});

describe('logit_bias, min_p and min_tokens', () => {
  const FORCED = 100; // a token id of the tiny model's 320
  const sampling = { stop: [], stopTokenIds: [], ignoreEos: true, temperature: 0 };

  it('logit_bias +100 repeats one token (HTTP and gRPC); an id outside the vocabulary is refused naming logit_bias', async () => {
    const bias = { [String(FORCED)]: 100 };
    const { status: code, json } = await post('completions', { model: base, prompt: 'The capital of', ...GREEDY, max_tokens: 4, logprobs: 0, logit_bias: bias });
    expect(code).toBe(200);
    const tokens = json['choices'][0].logprobs.tokens as string[];
    expect(tokens).toHaveLength(4);
    expect(new Set(tokens).size).toBe(1);
    const chat = await post('chat/completions', { model: base, messages: [{ role: 'user', content: 'Hi' }], ...GREEDY, max_tokens: 4, logprobs: true, logit_bias: bias });
    expect(chat.json['choices'][0].logprobs.content.map((c: { token: string }) => c.token)).toEqual(tokens);
    const bad = await post('completions', { model: base, prompt: 'x', logit_bias: { '1000000': 5 } }); // the worker's vocabulary check
    expect(bad.status).toBe(400);
    expect(bad.json['error'].param).toBe('logit_bias');
    expect(bad.json['error'].message).toContain('outside the vocabulary');
    const client = inferenceClient((stack as BaseOnlyStack).h.gateway.grpcAddr);
    try {
      const out = await generate(client, { model: base, prompt: 'The capital of', sampling: { ...sampling, maxTokens: 4, logitBias: { bias: { [FORCED]: 100 } } } });
      expect(out.flatMap((m) => m.tokenIds)).toEqual([FORCED, FORCED, FORCED, FORCED]);
      const refused = await generate(client, { model: base, prompt: 'x', sampling: { ...sampling, maxTokens: 1, logitBias: { bias: { 1000000: 5 } } } }).catch((e: ServiceError) => e);
      expect((refused as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      expect((refused as ServiceError).details).toContain('logit_bias');
    } finally {
      client.close();
    }
  });

  it('min_tokens holds back a stop token id; min_p 1 leaves only the greedy token', async () => {
    const client = inferenceClient((stack as BaseOnlyStack).h.gateway.grpcAddr);
    try {
      const req = { model: base, prompt: 'Once upon a time' };
      const plain = (await generate(client, { ...req, sampling: { ...sampling, maxTokens: 6 } })).flatMap((m) => m.tokenIds);
      const stopAt = { ...sampling, maxTokens: 6, stopTokenIds: [plain[0] as number] };
      expect((await generate(client, { ...req, sampling: stopAt })).flatMap((m) => m.tokenIds)).toEqual([plain[0]]);
      const held = (await generate(client, { ...req, sampling: { ...stopAt, minTokens: 3 } })).flatMap((m) => m.tokenIds);
      expect(held.slice(0, 3)).not.toContain(plain[0]);
      expect(held.length).toBeGreaterThanOrEqual(4);
      const minP = (await generate(client, { ...req, sampling: { ...sampling, maxTokens: 6, temperature: 1.5, seed: 3, minP: 1 } })).flatMap((m) => m.tokenIds);
      expect(minP).toEqual(plain);
    } finally {
      client.close();
    }
    const tooMany = await post('completions', { model: base, prompt: 'x', max_tokens: 2, min_tokens: 3 });
    expect(tooMany.status).toBe(400);
    expect(tooMany.json['error'].param).toBe('min_tokens');
  });
});

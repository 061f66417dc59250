/**
 * Structured outputs end to end with the real default model (SmolLM2-135M-Instruct, `--model smollm2`) behind
 * the real gateway: response_format json_schema / json_object on chat (streamed and not, n = 2), vLLM's
 * guided_choice / guided_regex on completions, gRPC Generate's sampling.json_schema, and the 400s /
 * INVALID_ARGUMENT naming response_format for a schema or regex the worker cannot compile.
 */
import { ServiceError, status } from '@grpc/grpc-js';
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
  stack = await startSmolStack('structured', PREFIX);
  ({ url, base } = stack);
});

afterAll(async () => {
  await stopSmolStack(stack);
});

type Json = Record<string, any>;

const PERSON = {
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer' } },
  required: ['name', 'age'],
  additionalProperties: false,
};
const MESSAGES = [{ role: 'user', content: 'Describe a person named Alice who is 30 years old, as JSON with name and age.' }];
const SCHEMA_FORMAT = { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } };

function isPerson(text: string): boolean {
  const v = JSON.parse(text) as Json;
  return Object.keys(v).sort().join(',') === 'age,name' && typeof v['name'] === 'string' && Number.isInteger(v['age']);
}

async function post(path: string, body: object): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}

async function stream(path: string, body: object): Promise<Json[]> {
  const answer = await postSse(url, path, body);
  expect(answer.status).toBe(200);
  expect(answer.endsWithDone).toBe(true);
  return answer.chunks;
}

describe('response_format on chat completions', () => {
  it('json_schema: the content parses and matches the schema, streamed = not streamed, finish_reason stop', async () => {
    const body = { model: base, messages: MESSAGES, response_format: SCHEMA_FORMAT, temperature: 0, max_tokens: 100 };
    const { status: code, json } = await post('chat/completions', body);
    expect(code).toBe(200);
    const content = json['choices'][0].message.content as string;
    expect(isPerson(content)).toBe(true);
    expect(json['choices'][0].finish_reason).toBe('stop');
    const chunks = await stream('chat/completions', body);
    const streamed = chunks.flatMap((c) => c['choices']).map((c: Json) => c.delta?.content ?? '').join('');
    expect(streamed).toBe(content);
    expect(isPerson(streamed)).toBe(true);
  });

  it('json_schema sampled with n = 2 and logprobs: every choice matches', async () => {
    const body = { model: base, messages: MESSAGES, response_format: SCHEMA_FORMAT, temperature: 0.8, seed: 5, n: 2, max_tokens: 100, logprobs: true };
    const { status: code, json } = await post('chat/completions', body);
    expect(code).toBe(200);
    expect(json['choices']).toHaveLength(2);
    for (const c of json['choices'] as Json[]) {
      expect(isPerson(c.message.content)).toBe(true);
      expect(c.finish_reason).toBe('stop');
      expect(c.logprobs.content.length).toBeGreaterThan(0);
      for (const t of c.logprobs.content as Json[]) expect(t.logprob).toBeLessThanOrEqual(0);
    }
  });

  it('json_object: any JSON object, streamed', async () => {
    const body = { model: base, messages: MESSAGES, response_format: { type: 'json_object' }, temperature: 0, max_tokens: 100 };
    const chunks = await stream('chat/completions', body);
    const text = chunks.flatMap((c) => c['choices']).map((c: Json) => c.delta?.content ?? '').join('');
    const value = JSON.parse(text) as unknown;
    expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
  });
});

describe("vLLM's guided_* on completions", () => {
  it('guided_choice picks one of the strings; guided_regex matches', async () => {
    const choice = await post('completions', { model: base, prompt: 'Is the sky blue? Answer:', guided_choice: ['yes', 'no'], temperature: 0, max_tokens: 10 });
    expect(choice.status).toBe(200);
    expect(['yes', 'no']).toContain(choice.json['choices'][0].text);
    const regex = await post('completions', { model: base, prompt: 'A phone number:', guided_regex: '[0-9]{3}-[0-9]{4}', temperature: 0, max_tokens: 20 });
    expect(regex.status).toBe(200);
    expect(regex.json['choices'][0].text).toMatch(/^[0-9]{3}-[0-9]{4}$/);
  });
});

describe('invalid specs', () => {
  it.each([
    [{ response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'frobnicate' } } } }],
    [{ guided_regex: '(unclosed' }],
    [{ response_format: { type: 'yaml' } }],
  ])('%j gets 400 naming response_format', async (extra) => {
    const { status: code, json } = await post('chat/completions', { model: base, messages: MESSAGES, max_tokens: 5, ...extra });
    expect(code).toBe(400);
    expect(json['error'].message).toMatch(/response_format/);
    expect(json['error'].param).toBe('response_format');
  });
});

describe('gRPC Generate', () => {
  it('sampling.json_schema constrains the output; an invalid one gets INVALID_ARGUMENT', async () => {
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    try {
      const sampling = { maxTokens: 100, temperature: 0, stop: [], stopTokenIds: [], ignoreEos: false };
      const out = await generate(client, {
        model: base,
        messages: MESSAGES,
        sampling: { ...sampling, responseFormat: { $case: 'jsonSchema', value: JSON.stringify(PERSON) } },
      });
      expect(isPerson(out.map((m) => m.text).join(''))).toBe(true);
      const bad = await generate(client, {
        model: base,
        prompt: 'x',
        sampling: { ...sampling, responseFormat: { $case: 'regex', value: '(' } },
      }).catch((e: ServiceError) => e);
      expect((bad as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      expect((bad as ServiceError).details).toContain('response_format');
    } finally {
      client.close();
    }
  });
});

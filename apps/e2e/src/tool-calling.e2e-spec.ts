/**
 * Tool (function) calling end to end with the real default model (SmolLM2-135M-Instruct, `--model smollm2`)
 * behind the real gateway: a named tool_choice and "required" return calls whose arguments validate against the
 * tool's parameters schema (guided decoding), a streamed call reassembles to the non-streamed one, a call cut by a
 * stop string finishes with stop, a follow-up turn with the assistant's tool_calls and the tool result is rendered
 * into the prompt and answered, and a tool_choice naming an unknown function, a parameters schema the worker
 * cannot compile or one nested 10,000 levels deep gets 400; gRPC Generate's `tools` with a named
 * function streams the same call. Few, short, greedy requests: this spec runs in CI.
 */
import { common } from '@inlaid/proto';
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
  // The tools in the system message make prompts of about 300 tokens: a KV cache of 32 MiB holds 728 (fp32).
  stack = await startSmolStack('tools', PREFIX, ['--kv-cache-bytes', String(32 << 20)]);
  ({ url, base } = stack);
});

afterAll(async () => {
  await stopSmolStack(stack);
});

type Json = Record<string, any>;

const WEATHER_PARAMS = {
  type: 'object',
  properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const TIME_PARAMS = { type: 'object', properties: { timezone: { type: 'string' } }, required: ['timezone'], additionalProperties: false };
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather in a city', parameters: WEATHER_PARAMS } },
  { type: 'function', function: { name: 'get_time', description: 'Current time in a timezone', parameters: TIME_PARAMS } },
];
const MESSAGES = [{ role: 'user', content: 'What is the weather in Paris, in celsius?' }];
const NAMED = { type: 'function', function: { name: 'get_weather' } };

/** The two parameter schemas above: exactly the listed properties, all required, strings, enums respected. */
function validArguments(name: string, text: string): boolean {
  const schema = name === 'get_weather' ? WEATHER_PARAMS : TIME_PARAMS;
  const args = JSON.parse(text) as Json;
  const props = schema.properties as Record<string, { type: string; enum?: string[] }>;
  if (Object.keys(args).sort().join(',') !== [...schema.required].sort().join(',')) return false;
  return Object.entries(args).every(([k, v]) => typeof v === props[k].type && (props[k].enum === undefined || props[k].enum.includes(v as string)));
}

async function post(body: object): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}

async function stream(body: object): Promise<Json[]> {
  const answer = await postSse(url, 'chat/completions', body);
  expect(answer.status).toBe(200);
  expect(answer.endsWithDone).toBe(true);
  return answer.chunks;
}

describe('tool calling on chat completions', () => {
  const NAMED_REQUEST = { messages: MESSAGES, tools: TOOLS, tool_choice: NAMED, temperature: 0, max_tokens: 60 };

  it('named tool_choice: one call of that function, arguments valid for its schema, content null, finish tool_calls', async () => {
    const { status, json } = await post({ model: base, ...NAMED_REQUEST });
    expect(status).toBe(200);
    const choice = json['choices'][0] as Json;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toHaveLength(1);
    const call = choice.message.tool_calls[0] as Json;
    expect(call.id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(call.type).toBe('function');
    expect(call.function.name).toBe('get_weather');
    expect(validArguments('get_weather', call.function.arguments)).toBe(true);
  });

  it('streamed, the delta.tool_calls reassemble to the same call and the stream finishes with tool_calls', async () => {
    const whole = await post({ model: base, ...NAMED_REQUEST });
    expect(whole.status).toBe(200);
    const call = whole.json['choices'][0].message.tool_calls[0] as Json;
    const chunks = await stream({ model: base, ...NAMED_REQUEST });
    const choices = chunks.flatMap((c) => c['choices'] as Json[]);
    const deltas = choices.flatMap((c) => (c.delta?.tool_calls ?? []) as Json[]);
    expect(deltas[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather', arguments: '' } });
    expect(deltas[0].id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(deltas.every((d) => d.index === 0)).toBe(true);
    expect(deltas.map((d) => d.function.arguments).join('')).toBe(call.function.arguments);
    expect(choices.map((c) => c.delta?.content ?? '').join('')).toBe('');
    expect(choices[choices.length - 1].finish_reason).toBe('tool_calls');
  });

  it('a named call cut by a stop string finishes with stop (not tool_calls), its arguments incomplete', async () => {
    // "unit" is a required key of get_weather's arguments, so the guided output always reaches it.
    const { status, json } = await post({ model: base, ...NAMED_REQUEST, stop: ['"unit"'] });
    expect(status).toBe(200);
    const choice = json['choices'][0] as Json;
    expect(choice.finish_reason).toBe('stop');
    expect(choice.message.tool_calls).toHaveLength(1);
    expect(choice.message.tool_calls[0].function.name).toBe('get_weather');
    expect(() => JSON.parse(choice.message.tool_calls[0].function.arguments as string)).toThrow();
  });

  it('required without parallel calls: exactly one call of an offered function with valid arguments', async () => {
    const { status, json } = await post({ model: base, messages: MESSAGES, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, temperature: 0, max_tokens: 60 });
    expect(status).toBe(200);
    const choice = json['choices'][0] as Json;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.tool_calls).toHaveLength(1);
    const c = choice.message.tool_calls[0] as Json;
    expect(['get_weather', 'get_time']).toContain(c.function.name);
    expect(validArguments(c.function.name, c.function.arguments)).toBe(true);
  });

  it('a follow-up turn with the assistant tool_calls and the tool result is answered, both rendered into the prompt', async () => {
    const made = { id: 'call_0123', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' } };
    const messages = [
      ...MESSAGES,
      { role: 'assistant', content: null, tool_calls: [made] },
      { role: 'tool', tool_call_id: made.id, content: '{"temperature": 18, "unit": "celsius"}' },
    ];
    const { status, json } = await post({ model: base, messages, tools: TOOLS, temperature: 0, max_tokens: 16 });
    expect(status).toBe(200);
    const choice = json['choices'][0] as Json;
    // 16 tokens cannot hold a whole <tool_call> block of these tools, so no tool_calls finish.
    expect(['stop', 'length']).toContain(choice.finish_reason);
    // The same request without the call and its result: the rendered <tool_call> and <tool_response> are the difference.
    const first = await post({ model: base, messages: MESSAGES, tools: TOOLS, temperature: 0, max_tokens: 1 });
    expect(first.status).toBe(200);
    expect(json['usage'].prompt_tokens - first.json['usage'].prompt_tokens).toBeGreaterThanOrEqual(15);
  });

  it('tool_choice naming a function that is not offered, or a schema the worker cannot compile, gets 400', async () => {
    const unknown = await post({ model: base, messages: MESSAGES, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'launch' } } });
    expect(unknown.status).toBe(400);
    expect(unknown.json['error'].param).toBe('tool_choice');
    const pattern = { type: 'object', properties: { code: { type: 'string', pattern: '(' } }, required: ['code'] };
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: pattern } }];
    const bad = await post({ model: base, messages: MESSAGES, tools, tool_choice: 'required', max_tokens: 5 });
    expect(bad.status).toBe(400);
    expect(bad.json['error'].param).toBe('tools');
  });

  it('10,000 levels of nested JSON in a parameters schema get 400 naming it, not a 500', async () => {
    // JSON.stringify itself overflows at that depth: the body is written as text.
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', default: 'DEEP' } } }];
    const body = JSON.stringify({ model: base, messages: MESSAGES, tools, max_tokens: 5 }).replace('"DEEP"', '['.repeat(10_000) + ']'.repeat(10_000));
    const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Json)['error'].param).toBe('tools[0].function.parameters');
  });
});

describe('gRPC Generate', () => {
  it('tools with a named function: tool_calls deltas reassemble to a valid call, FINISH_REASON_TOOL_CALLS', async () => {
    const client = inferenceClient((stack as SmolStack).h.gateway.grpcAddr);
    try {
      const functions = TOOLS.map((t) => ({ name: t.function.name, description: t.function.description, parameters: JSON.stringify(t.function.parameters) }));
      const out = await generate(client, {
        model: base,
        messages: MESSAGES,
        sampling: { maxTokens: 60, temperature: 0, stop: [], stopTokenIds: [], ignoreEos: false },
        tools: { functions, choice: '', function: 'get_weather' },
      });
      const deltas = out.flatMap((m) => m.toolCalls);
      expect(deltas[0]).toMatchObject({ index: 0, name: 'get_weather', arguments: '' });
      expect(deltas[0].id).toMatch(/^call_[0-9a-f]{24}$/);
      expect(validArguments('get_weather', deltas.map((d) => d.arguments).join(''))).toBe(true);
      expect(out.map((m) => m.text).join('')).toBe('');
      expect(out[out.length - 1].finishReason).toBe(common.FinishReason.FINISH_REASON_TOOL_CALLS);
    } finally {
      client.close();
    }
  });
});

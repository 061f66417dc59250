/** Tool calls through the chat stream encoder and the response shapes (OpenAI's chunk and message shapes). */
import type { FinishReason, GenerationDelta } from '../generation/generation.types';
import { chatChoice } from './response-shapes';
import { StreamEncoder } from './stream-encoder';
import { assembleToolOutput, toolCallParser } from './tool-calls';
import type { ToolPlan } from './tools';

const META = { id: 'chatcmpl-1', created: 1, model: 'base' };
const TOOLS = [{ name: 'get_weather', parameters: { type: 'object' } }];
const NAMED: ToolPlan = { tools: TOOLS, mode: 'named', named: 'get_weather', parallel: true };
const AUTO: ToolPlan = { tools: TOOLS, mode: 'auto', parallel: true };

type Json = Record<string, any>;

function delta(text: string, finishReason: FinishReason | null = null): GenerationDelta {
  return { text, tokenIds: [1], finishReason, promptTokens: 5, completionTokens: 1 };
}

function chunks(events: string[]): Json[] {
  return events.filter((e) => e !== 'data: [DONE]\n\n').map((e) => JSON.parse(e.slice('data: '.length)) as Json);
}

function encode(plan: ToolPlan, pieces: string[], finish: FinishReason = 'stop'): { out: Json[]; raw: string[] } {
  const enc = new StreamEncoder('chat.completions', META, false, { tools: plan });
  const raw = [...enc.open(), ...pieces.flatMap((p, i) => enc.delta(delta(p, i === pieces.length - 1 ? finish : null)))];
  return { out: chunks(raw), raw };
}

describe('StreamEncoder with tools', () => {
  it('named: delta.tool_calls opening chunk, argument fragments, then finish_reason tool_calls and [DONE]', () => {
    const { out, raw } = encode(NAMED, ['{"name": "get_', 'weather", "argu', 'ments": {"city"', ': "Paris"}}', '']);
    expect(raw[raw.length - 1]).toBe('data: [DONE]\n\n');
    expect(out[0]['choices'][0].delta).toEqual({ role: 'assistant', content: '' });
    const deltas = out.slice(1, -1).map((c) => c['choices'][0].delta as Json);
    expect(deltas.every((d) => d['content'] === undefined && d['tool_calls'].length === 1)).toBe(true);
    const first = deltas[0]['tool_calls'][0] as Json;
    expect(first).toEqual({ index: 0, id: expect.stringMatching(/^call_[0-9a-f]{24}$/), type: 'function', function: { name: 'get_weather', arguments: '' } });
    expect(deltas.slice(1).map((d) => d['tool_calls'][0].function.arguments).join('')).toBe('{"city": "Paris"}');
    expect(deltas.length).toBeGreaterThan(2);
    const last = out[out.length - 1]['choices'][0];
    expect(last).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' });
  });

  it('auto without calls streams content and finishes with stop', () => {
    const { out } = encode(AUTO, ['It is ', 'sunny.']);
    expect(out.slice(1, -1).map((c) => c['choices'][0].delta.content).join('')).toBe('It is sunny.');
    expect(out[out.length - 1]['choices'][0].finish_reason).toBe('stop');
  });

  it('auto: content, then the call, finish tool_calls; cut by max_tokens finishes with length', () => {
    const { out } = encode(AUTO, ['Checking <tool', '_call>{"name": "get_weather", "arguments": {}}</tool_call>']);
    const deltas = out.slice(1, -1).map((c) => c['choices'][0].delta as Json);
    expect(deltas[0]).toEqual({ content: 'Checking' }); // the space next to the call is dropped
    expect(deltas[1]['tool_calls'][0].function.name).toBe('get_weather');
    expect(deltas[2]['tool_calls'][0].function.arguments).toBe('{}');
    expect(out[out.length - 1]['choices'][0].finish_reason).toBe('tool_calls');
    const cut = encode(NAMED, ['{"name": "get_weather", "arguments": {"ci'], 'length').out;
    expect(cut[cut.length - 1]['choices'][0].finish_reason).toBe('length');
  });

  it('a call cut by a stop string or stop token (JSON unclosed) finishes with stop, not tool_calls', () => {
    const cut = encode(NAMED, ['{"name": "get_weather", ', '"arguments": {"ci'], 'stop').out;
    const deltas = cut.slice(1, -1).map((c) => c['choices'][0].delta as Json);
    expect(deltas.map((d) => d['tool_calls'][0].function.arguments).join('')).toBe('{"ci');
    expect(cut[cut.length - 1]['choices'][0].finish_reason).toBe('stop');
    const inString = encode(NAMED, ['{"name": "get_weather", "arguments": {"city": "a}}'], 'stop').out;
    expect(inString[inString.length - 1]['choices'][0].finish_reason).toBe('stop');
  });
});

describe('StreamEncoder with tools and n > 1', () => {
  it('parses each choice on its own: one makes a call, one answers in text, one is cut by max_tokens', () => {
    const enc = new StreamEncoder('chat.completions', META, true, { tools: AUTO, choices: 3 });
    const raw = [
      ...enc.open(),
      ...enc.delta(delta('<tool_call>{"name": "get_'), 0),
      ...enc.delta(delta('Sunny'), 1),
      ...enc.delta(delta('<tool_call>{"name": "get_weather", "arguments": {}}', 'length'), 2),
      ...enc.delta(delta('weather", "arguments": {"city": "Oslo"}}</tool_call>', 'stop'), 0),
      ...enc.delta(delta('.', 'stop'), 1),
    ];
    expect(raw[raw.length - 1]).toBe('data: [DONE]\n\n');
    const out = chunks(raw);
    const of = (i: number) => out.filter((c) => c['choices'][0]?.index === i).map((c) => c['choices'][0] as Json);
    expect(of(0).flatMap((c) => c.delta.tool_calls ?? []).map((d: Json) => d.function.arguments).join('')).toBe('{"city":"Oslo"}');
    expect(of(0).flatMap((c) => c.delta.tool_calls ?? [])[0].index).toBe(0);
    expect(of(1).map((c) => c.delta.content ?? '').join('')).toBe('Sunny.');
    expect(of(1).some((c) => c.delta.tool_calls !== undefined)).toBe(false);
    expect(of(2).flatMap((c) => c.delta.tool_calls ?? [])[0].function.name).toBe('get_weather');
    expect([0, 1, 2].map((i) => of(i)[of(i).length - 1].finish_reason)).toEqual(['tool_calls', 'stop', 'length']);
    expect(out[out.length - 1]['usage'].completion_tokens).toBe(3);
  });
});

describe('streamed and non-streamed tool output agree', () => {
  it.each([
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>\n',
    '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>\n\n<tool_call>{"name": "get_weather", "arguments": {"a": 1}}</tool_call>',
    ' Sure. \n<tool_call>{"name": "get_weather"}</tool_call>\nDone.\n',
    'No calls here.\n',
    'a <tool_call>{"name": "nope"}</tool_call> \n',
  ])('auto %j: the content deltas reassemble to the message content at every delta size', (text) => {
    const message = assembleToolOutput(toolCallParser(AUTO), text, 'stop');
    for (const size of [1, 2, 5, text.length]) {
      const pieces = Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));
      const deltas = encode(AUTO, pieces).out.slice(1, -1).map((c) => c['choices'][0].delta as Json);
      expect(deltas.map((d) => d['content'] ?? '').join('')).toBe(message.content ?? '');
      expect(deltas.flatMap((d) => d['tool_calls'] ?? []).filter((d: Json) => d.id !== undefined)).toHaveLength(message.toolCalls.length);
    }
  });
});

describe('StreamEncoder with tools and logprobs', () => {
  it("tokens that produce no chunk yet send their logprobs with the call's next chunk", () => {
    const entry = (token: string) => ({ sampled: { tokenId: 1, token, tokenBytes: Buffer.from(token), logprob: -0.5 }, top: [] });
    const enc = new StreamEncoder('chat.completions', META, false, { tools: NAMED, logprobs: true });
    const d = (text: string, finishReason: FinishReason | null = null): GenerationDelta => ({ ...delta(text, finishReason), logprobs: [entry(text)] });
    expect(enc.delta(d('{"name": "get_'))).toEqual([]);
    const opened = chunks(enc.delta(d('weather", "arguments": {')));
    expect(opened[0]['choices'][0].delta.tool_calls[0].function.name).toBe('get_weather');
    expect(opened[0]['choices'][0].logprobs.content.map((t: Json) => t.token)).toEqual(['{"name": "get_', 'weather", "arguments": {']);
    expect(opened[1]['choices'][0].logprobs).toBeNull();
  });
});

describe('chatChoice with tool calls', () => {
  it('content null, tool_calls, finish_reason tool_calls; without calls unchanged', () => {
    const call = { id: 'call_1', type: 'function' as const, function: { name: 'f', arguments: '{}' } };
    expect(chatChoice(0, null, 'stop', null, [call], true)).toEqual({
      index: 0,
      message: { role: 'assistant', content: null, refusal: null, tool_calls: [call] },
      logprobs: null,
      finish_reason: 'tool_calls',
    });
    expect(chatChoice(0, 'hi', 'stop')).toEqual({ index: 0, message: { role: 'assistant', content: 'hi', refusal: null }, logprobs: null, finish_reason: 'stop' });
    expect(chatChoice(0, null, 'length', null, [call]).finish_reason).toBe('length');
    expect(chatChoice(0, null, 'stop', null, [call], false).finish_reason).toBe('stop');
  });
});

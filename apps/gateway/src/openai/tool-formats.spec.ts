/**
 * Tool calling in the served model's own format (tool-format.ts): the llama3_json and mistral parsers
 * (json-calls.ts), the parser and guided schema each format gets (tool-calls.ts, tool-schema.ts) and the native
 * prompt (tool-prompt.ts). Streaming is checked against the non-streamed message: every parser is fed the same
 * text in pieces of every size and must give the same events' content and calls as the whole text at once.
 */
import { common } from '@inlaid/proto';
import { JsonCallParser, jsonCalls, LLAMA3_JSON, MISTRAL, type JsonCallsFormat } from './json-calls';
import { parseChatRequest } from './request-validation';
import { assembleToolOutput, toolCallParser, type ToolOutput } from './tool-calls';
import type { ToolEvent } from './tool-events';
import { HERMES_FALLBACK, toolSupportOf, type ToolSupport } from './tool-format';
import { nativeTools, renderChat } from './tool-prompt';
import { callSchema, toolSchema } from './tool-schema';
import type { ToolFunction, ToolPlan } from './tools';
import { withGrpcTools } from '../grpc-api/generate-tools';
import { toolMessage as message } from '../testing/tool-message';

const NAMES = new Set(['get_weather', 'get_time']);
const WEATHER: ToolFunction = { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
const TIME: ToolFunction = { name: 'get_time', parameters: { type: 'object', properties: {} } };
const LLAMA: ToolSupport = { parser: 'llama3_json', native: true };
const MISTRAL_NATIVE: ToolSupport = { parser: 'mistral', native: true };
const HERMES_NATIVE: ToolSupport = { parser: 'hermes', native: true };
const PYTHONIC_NATIVE: ToolSupport = { parser: 'pythonic', native: true };

function plan(mode: ToolPlan['mode'], support?: ToolSupport, extra: Partial<ToolPlan> = {}): ToolPlan {
  return { tools: [WEATHER, TIME], mode, parallel: true, ...(support !== undefined ? { support } : {}), ...extra };
}

function ids(): () => string {
  let n = 0;
  return () => `call_${n++}`;
}

/** Feeds `text` in pieces of `size` characters, then finishes. */
function run(format: JsonCallsFormat, text: string, size: number): ToolEvent[] {
  const p = new JsonCallParser(format, NAMES, ids());
  const out: ToolEvent[] = [];
  for (let i = 0; i < text.length; i += size) out.push(...p.push(text.slice(i, i + size)));
  return [...out, ...p.finish()];
}


/** Every piece size gives the message the whole text gives; returns that message. */
function sameAtAnySize(format: JsonCallsFormat, text: string): ReturnType<typeof message> {
  const whole = message(run(format, text, text.length || 1));
  for (let size = 1; size <= Math.min(text.length, 13); size++) expect(message(run(format, text, size))).toEqual(whole);
  return whole;
}

const PARIS = { name: 'get_weather', arguments: '{"city":"Paris"}' };
const TIME_CALL = { name: 'get_time', arguments: '{}' };

describe('llama3_json parser', () => {
  it.each([
    ['one object', '{"name": "get_weather", "parameters": {"city": "Paris"}}', [PARIS]],
    ['after <|python_tag|>, "arguments" accepted', '<|python_tag|>{"name": "get_weather", "arguments": {"city": "Paris"}}', [PARIS]],
    ['several separated by ;', ' {"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}\n', [PARIS, TIME_CALL]],
    ['braces inside strings', '{"name": "get_weather", "parameters": {"city": "P}a{r\\"is"}}', [{ name: 'get_weather', arguments: '{"city":"P}a{r\\"is"}' }]],
  ])('%s: calls, no content, at any piece size', (_label, text, calls) => {
    expect(sameAtAnySize(LLAMA3_JSON, text)).toEqual({ content: '', calls });
  });

  it.each([
    ['prose', 'The weather in Paris is mild.'],
    ['JSON that is not a call', '{"answer": 42}'],
    ['an unknown tool', '{"name": "rm_rf", "parameters": {}}'],
    ['malformed JSON', '{"name": "get_weather", "parameters": {"city": }} and more'],
    ['arguments not an object', '{"name": "get_weather", "parameters": [1]}'],
    ['a call cut short by the end of the output', '{"name": "get_weather", "parameters": {"city": "Par'],
    ['a JSON-looking call after prose', 'Sure: {"name": "get_weather", "parameters": {"city": "Paris"}}'],
    ['a partial tag', '<|python_ta'],
  ])('%s: plain content, unchanged, never an error', (_label, text) => {
    expect(sameAtAnySize(LLAMA3_JSON, text)).toEqual({ content: text, calls: [] });
  });

  it('text after the calls is content without the whitespace and ; next to them', () => {
    expect(sameAtAnySize(LLAMA3_JSON, '{"name": "get_time", "parameters": {}};  Done. ')).toEqual({ content: 'Done.', calls: [TIME_CALL] });
  });

  it('a bad call after a good one: the good one stays a call, the rest is content', () => {
    expect(sameAtAnySize(LLAMA3_JSON, '{"name": "get_time", "parameters": {}}; {"name": "nope", "parameters": {}}')).toEqual({
      content: '{"name": "nope", "parameters": {}}',
      calls: [TIME_CALL],
    });
  });

  it('streams each call when its object closes, content as it arrives', () => {
    const p = new JsonCallParser(LLAMA3_JSON, NAMES, ids());
    expect(p.push('{"name": "get_time", ')).toEqual([]);
    expect(p.push('"parameters": {}}')).toEqual([{ call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_time', arguments: '' } } }, { call: { index: 0, function: { arguments: '{}' } } }]);
    expect(p.calls).toBe(1);
    expect(p.finish()).toEqual([]);
    const q = new JsonCallParser(LLAMA3_JSON, NAMES, ids());
    expect(q.push('Hello ')).toEqual([{ content: 'Hello' }]);
    expect(q.push('world')).toEqual([{ content: ' world' }]);
  });
});

describe('mistral parser', () => {
  it.each([
    ['a list after [TOOL_CALLS]', '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]', [PARIS, TIME_CALL]],
    ['the list alone (the special token decoded away)', '[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [PARIS]],
    ['one object', ' {"name": "get_time", "arguments": {}}', [TIME_CALL]],
  ])('%s: calls at any piece size', (_label, text, calls) => {
    expect(sameAtAnySize(MISTRAL, text)).toEqual({ content: '', calls });
  });

  it('content before the tag stays content', () => {
    expect(sameAtAnySize(MISTRAL, 'Let me check. [TOOL_CALLS][{"name": "get_time", "arguments": {}}]')).toEqual({ content: 'Let me check.', calls: [TIME_CALL] });
  });

  it.each([
    ['a list that is not all calls', '[{"name": "get_time", "arguments": {}}, 3]'],
    ['an empty list', '[]'],
    ['a tag then prose', '[TOOL_CALLS] nothing to call'],
    ['a list of numbers in prose', '[1, 2] are numbers'],
    ['unclosed', '[TOOL_CALLS][{"name": "get_time", "arguments": {'],
  ])('%s: plain content', (_label, text) => {
    expect(sameAtAnySize(MISTRAL, text)).toEqual({ content: text, calls: [] });
  });

  it('jsonCalls: all or nothing', () => {
    expect(jsonCalls('[{"name": "get_time"}]', NAMES)).toEqual([TIME_CALL]);
    expect(jsonCalls('[{"name": "get_time"}, {"name": "x"}]', NAMES)).toBeUndefined();
    expect(jsonCalls('{"name": ', NAMES)).toBeUndefined();
  });
});

describe('format per served model', () => {
  it('toolSupportOf: a worker that renders tools natively with a known parser; else the Hermes fallback', () => {
    expect(toolSupportOf({ toolCallParser: 'llama3_json', nativeTools: true })).toEqual(LLAMA);
    expect(toolSupportOf({ toolCallParser: 'hermes', nativeTools: false })).toEqual(HERMES_FALLBACK);
    expect(toolSupportOf({ toolCallParser: '', nativeTools: false })).toEqual(HERMES_FALLBACK); // an older worker
    expect(toolSupportOf({ toolCallParser: 'pythonic', nativeTools: true })).toEqual(PYTHONIC_NATIVE);
    expect(toolSupportOf({ toolCallParser: 'granite', nativeTools: true })).toEqual(HERMES_FALLBACK); // a parser this gateway lacks
    expect(toolSupportOf(null)).toEqual(HERMES_FALLBACK);
  });

  it.each([
    ['hermes', HERMES_NATIVE, 'Sure.\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>', 'Sure.'],
    ['llama3_json', LLAMA, '{"name": "get_time", "parameters": {}}', null],
    ['mistral', MISTRAL_NATIVE, '[TOOL_CALLS][{"name": "get_time", "arguments": {}}]', null],
    ['mistral (newer templates)', MISTRAL_NATIVE, 'On it. [TOOL_CALLS]get_time[ARGS]{}', 'On it.'],
    ['pythonic', PYTHONIC_NATIVE, '[get_time()]', null],
  ])('auto with %s: its own parser reads its calls', (_label, support, text, content) => {
    const out: ToolOutput = assembleToolOutput(toolCallParser(plan('auto', support), ids()), text, 'stop');
    expect(out).toMatchObject({ content, toolCallsFinish: true });
    expect(out.toolCalls.map((c) => c.function)).toEqual([TIME_CALL]);
  });

  it('a Hermes block is not a call for the llama3_json parser (content), nor JSON for the hermes one', () => {
    const hermesText = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>';
    expect(assembleToolOutput(toolCallParser(plan('auto', LLAMA), ids()), hermesText, 'stop')).toMatchObject({ content: hermesText, toolCalls: [] });
    const json = '{"name": "get_time", "parameters": {}}';
    expect(assembleToolOutput(toolCallParser(plan('auto'), ids()), json, 'stop')).toMatchObject({ content: json, toolCalls: [] });
  });

  it('guided schema: llama3_json calls carry "parameters", hermes, mistral and pythonic "arguments"', () => {
    expect(toolSchema(plan('named', LLAMA, { named: 'get_weather' }))).toEqual({
      type: 'object',
      properties: { name: { type: 'string', const: 'get_weather' }, parameters: WEATHER.parameters },
      required: ['name', 'parameters'],
      additionalProperties: false,
    });
    expect(toolSchema(plan('required', MISTRAL_NATIVE))).toEqual({ type: 'array', items: { anyOf: [callSchema(WEATHER), callSchema(TIME)] }, minItems: 1 });
    expect(toolSchema(plan('named', HERMES_NATIVE, { named: 'get_time' }))).toEqual(callSchema(TIME));
    expect(toolSchema(plan('named', PYTHONIC_NATIVE, { named: 'get_time' }))).toEqual(callSchema(TIME)); // bare JSON, not a list
  });

  it.each([
    ['named', { named: 'get_weather' }, '{"name": "get_weather", "parameters": {"city": "Paris"}}'],
    ['required', {}, '[{"name": "get_weather", "parameters": {"city": "Paris"}}]'],
  ])('guided %s output in the llama3_json shape is a call, streamed equal to whole', (mode, extra, text) => {
    const p = plan(mode as ToolPlan['mode'], LLAMA, extra);
    const call = { name: 'get_weather', arguments: '{"city": "Paris"}' }; // the raw arguments as generated
    const whole = assembleToolOutput(toolCallParser(p, ids()), text, 'stop');
    expect(whole.toolCalls.map((c) => c.function)).toEqual([call]);
    expect(whole.toolCallsFinish).toBe(true);
    const parser = toolCallParser(p, ids());
    const events = [...[...text].flatMap((c) => parser.push(c)), ...parser.finish()];
    expect(message(events)).toEqual({ content: '', calls: [call] });
  });
});

describe('native prompt', () => {
  const body = {
    model: 'm',
    messages: [
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '18C' },
    ],
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'w', parameters: WEATHER.parameters } }],
  };

  it('keeps the tool fields on the messages and sends the tools apart', () => {
    const req = parseChatRequest(body, () => LLAMA);
    expect(req.input.messages).toEqual([
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: '', toolCalls: { calls: [{ id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' }] } },
      { role: 'tool', content: '18C', toolCallId: 'call_1' },
    ]);
    expect(JSON.parse(req.input.tools ?? '')).toEqual([{ type: 'function', function: { name: 'get_weather', description: 'w', parameters: WEATHER.parameters } }]);
    expect(req.tools?.support).toEqual(LLAMA);
  });

  it('a template without tool support (the default) gets the Hermes rendering, no separate tools', () => {
    const req = parseChatRequest(body, () => HERMES_FALLBACK);
    expect(req.input.tools).toBeUndefined();
    expect(req.input.messages[0]?.content).toContain('<tools>');
    expect(req.input.messages.some((m) => m.toolCalls !== undefined)).toBe(false);
    expect(parseChatRequest(body).input.messages).toEqual(req.input.messages);
  });

  it('required with a native llama3_json model: the guided schema in its shape', () => {
    const req = parseChatRequest({ ...body, tool_choice: 'required' }, () => LLAMA);
    const format = req.input.sampling.responseFormat;
    expect(format?.$case).toBe('jsonSchema');
    expect(JSON.stringify(format?.value)).toContain('parameters');
    expect(JSON.parse(format?.value as string).items.required).toEqual(['name', 'parameters']);
  });

  it('renderChat / nativeTools directly; gRPC Generate the same', () => {
    const turns = [{ role: 'user', content: 'x' }];
    expect(renderChat(turns, plan('auto', LLAMA), LLAMA)).toEqual([{ role: 'user', content: 'x' }]);
    expect(nativeTools(plan('auto'), HERMES_FALLBACK)).toBe('');
    const grpc = withGrpcTools(
      {
        model: 'm',
        prompt: '',
        messages: [{ role: 'user', content: 'x' }],
        tools: { functions: [{ name: 'get_time', description: '', parameters: '' }], choice: '', function: '', parallelToolCalls: true },
      } as never,
      { model: 'm', prompt: '', messages: [{ role: 'user', content: 'x' }], sampling: {} as common.SamplingParams, api: 'grpc' },
      () => MISTRAL_NATIVE,
    );
    expect(grpc.plan?.support).toEqual(MISTRAL_NATIVE);
    expect(grpc.input.messages).toEqual([{ role: 'user', content: 'x' }]);
    expect(JSON.parse(grpc.input.tools ?? '')[0].function.name).toBe('get_time');
  });
});

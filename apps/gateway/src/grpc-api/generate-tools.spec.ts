import { status } from '@grpc/grpc-js';
import { common, inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import type { GenerationDelta } from '../generation/generation.types';
import { toGenerationInput } from './generate-request';
import { GrpcToolStream, withGrpcTools } from './generate-tools';

const PARAMS = JSON.stringify({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] });
const WEATHER: inference.ToolFunction = { name: 'get_weather', description: 'Weather', parameters: PARAMS };
const DEEP = '['.repeat(10_000) + ']'.repeat(10_000);
const USER: common.ChatMessage[] = [{ role: 'user', content: 'Weather in Paris?' }];

function request(tools: Partial<inference.Tools> | undefined, messages: common.ChatMessage[] = USER): inference.GenerateRequest {
  const t = tools === undefined ? undefined : { functions: [WEATHER], choice: '', function: '', ...tools };
  return { model: 'base', prompt: '', messages, requestId: '', ...(t !== undefined ? { tools: t } : {}) };
}

function apply(req: inference.GenerateRequest) {
  return withGrpcTools(req, toGenerationInput(req));
}

function paramOf(req: inference.GenerateRequest): string | undefined {
  try {
    apply(req);
  } catch (err) {
    expect(err).toBeInstanceOf(InlaidError);
    expect((err as InlaidError).status).toBe(status.INVALID_ARGUMENT);
    return (err as InlaidError).details.param;
  }
  throw new Error('expected INVALID_ARGUMENT');
}

describe('withGrpcTools', () => {
  it('without tools or history the request is unchanged', () => {
    const req = request(undefined);
    const input = toGenerationInput(req);
    expect(withGrpcTools(req, input)).toEqual({ input });
  });

  it('auto: tools rendered into a system message, no constraint; a named function constrains the output', () => {
    const auto = apply(request({}));
    expect(auto.plan?.mode).toBe('auto');
    expect(auto.input.messages[0].content).toContain('"name": "get_weather"');
    expect(auto.input.sampling.responseFormat).toBeUndefined();
    const named = apply(request({ function: 'get_weather' }));
    expect(named.plan?.mode).toBe('named');
    expect(JSON.parse(named.input.sampling.responseFormat?.value as string)).toMatchObject({ properties: { name: { const: 'get_weather' } } });
    expect(apply(request({ choice: 'none' })).plan).toBeUndefined();
  });

  it('a developer turn is the system turn with tools too (as without tools and on REST)', () => {
    const out = apply(request({}, [{ role: 'developer', content: 'Answer briefly.' }, ...USER]));
    expect(out.input.messages.filter((m) => m.role === 'developer')).toEqual([]);
    const system = out.input.messages.filter((m) => m.role === 'system');
    expect(system).toHaveLength(1); // one system turn: the developer text with the tools, not a second one
    expect(system[0].content).toContain('Answer briefly.');
    expect(system[0].content).toContain('"name": "get_weather"');
  });

  it('renders the tool-call history', () => {
    const messages: common.ChatMessage[] = [
      ...USER,
      { role: 'assistant', content: '', toolCalls: { calls: [{ id: 'c1', name: 'get_weather', arguments: '{"city": "Paris"}' }] } },
      { role: 'tool', content: '18C', toolCallId: 'c1' },
    ];
    const out = apply(request(undefined, messages));
    expect(out.plan).toBeUndefined();
    expect(out.input.messages.slice(1)).toEqual([
      { role: 'assistant', content: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' },
      { role: 'user', content: '<tool_response>\n18C\n</tool_response>' },
    ]);
  });

  it.each([
    [request({ function: 'launch' }), 'tools.function'],
    [request({ choice: 'always' }), 'tools.choice'],
    [request({ choice: 'auto', function: 'get_weather' }), 'tools.choice'],
    [request({ functions: [{ ...WEATHER, parameters: '{' }] }), 'tools.functions[0].parameters'],
    [request({ functions: [{ ...WEATHER, parameters: '{"type": "object", "properties": {"a": {"type": "str"}}}' }] }), 'tools.functions[0].parameters'],
    [request({ functions: [{ ...WEATHER, name: 'has space' }] }), 'tools.functions[0].name'],
    [request({ functions: [] }), 'tools.functions'],
    [request(undefined, [{ role: 'tool', content: 'x', toolCallId: 'nope' }]), 'messages[0].tool_call_id'],
    [request(undefined, [{ role: 'assistant', content: '', toolCalls: { calls: [{ id: 'c', name: '', arguments: '{}' }] } }]), 'messages[0].tool_calls.calls[0].name'],
    [{ ...request({}), messages: [], prompt: 'x' }, 'tools'],
    [request({ functions: [{ ...WEATHER, parameters: `{"type": "object", "default": ${DEEP}}` }] }), 'tools.functions[0].parameters'],
    [request(undefined, [{ role: 'assistant', content: '', toolCalls: { calls: [{ id: 'c', name: 'f', arguments: DEEP }] } }]), 'messages[0].tool_calls.calls[0].arguments'],
    [{ ...request({ choice: 'required' }), sampling: { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false, responseFormat: { $case: 'jsonObject', value: true } } }, 'tools.function'],
  ])('%#: INVALID_ARGUMENT naming %s', (req, param) => {
    expect(paramOf(req as inference.GenerateRequest)).toBe(param);
  });
});

describe('tools errors name proto fields', () => {
  it("the call schema's size bound names tools.functions", () => {
    // Small enough as tools, too large once wrapped into the call schema of "required".
    const parameters = JSON.stringify({ type: 'object', description: 'x'.repeat(65_536 - 150) });
    const err = (() => {
      try {
        apply(request({ functions: [{ ...WEATHER, parameters }], choice: 'required' }));
      } catch (e) {
        return e as InlaidError;
      }
      throw new Error('expected INVALID_ARGUMENT');
    })();
    expect(err.message).toContain('call schema');
    expect(err.details.param).toBe('tools.functions');
  });
});

describe('GrpcToolStream', () => {
  const delta = (text: string, finishReason: GenerationDelta['finishReason'] = null): GenerationDelta => ({ text, tokenIds: [1], finishReason, promptTokens: 3, completionTokens: 1 });

  it('a named call: text empty, the call opens with id and name, arguments follow, FINISH_REASON_TOOL_CALLS', () => {
    const { plan } = apply(request({ function: 'get_weather' }));
    const s = new GrpcToolStream(plan as NonNullable<typeof plan>);
    const first = s.fields(delta('{"name": "get_weather", "arguments": {"ci'));
    expect(first.text).toBe('');
    expect(first.toolCalls[0]).toMatchObject({ index: 0, name: 'get_weather', arguments: '' });
    expect(first.toolCalls[0].id).toMatch(/^call_/);
    const last = s.fields(delta('ty": "Paris"}}', 'stop'));
    expect([...first.toolCalls, ...last.toolCalls].map((c) => c.arguments).join('')).toBe('{"city": "Paris"}');
    expect(last.finishReason).toBe(common.FinishReason.FINISH_REASON_TOOL_CALLS);
  });

  it('a named call cut by a stop string keeps its deltas but not FINISH_REASON_TOOL_CALLS', () => {
    const { plan } = apply(request({ function: 'get_weather' }));
    const s = new GrpcToolStream(plan as NonNullable<typeof plan>);
    s.fields(delta('{"name": "get_weather", "arguments": {"ci'));
    const last = s.fields(delta('ty": "Pa', 'stop'));
    expect(last.toolCalls.map((c) => c.arguments)).toEqual(['ty": "Pa']);
    expect(last.finishReason).toBeUndefined();
  });

  it('auto without calls passes the text and leaves the finish reason alone', () => {
    const { plan } = apply(request({}));
    const s = new GrpcToolStream(plan as NonNullable<typeof plan>);
    expect(s.fields(delta('Sunny.', 'stop'))).toEqual({ text: 'Sunny.', toolCalls: [] });
  });
});

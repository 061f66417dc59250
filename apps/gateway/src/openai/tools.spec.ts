import { parseChatRequest } from './request-validation';
import { parseToolPlan } from './tools';
import { paramOf } from '../testing/invalid-param';

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const TIME = { type: 'function', function: { name: 'get_time' } };
const USER = [{ role: 'user', content: 'Weather in Paris?' }];
const tool = (parameters: Record<string, unknown>, name = 'f') => ({ type: 'function', function: { name, parameters } });

describe('parseToolPlan', () => {
  it('defaults to auto with parallel calls when tools are given', () => {
    expect(parseToolPlan({ tools: [WEATHER, TIME] })).toEqual({
      mode: 'auto',
      parallel: true,
      tools: [
        { name: 'get_weather', description: 'Current weather of a city', parameters: WEATHER.function.parameters },
        { name: 'get_time', parameters: { type: 'object', properties: {} } },
      ],
    });
  });

  it('offers no tools without tools or with tool_choice none', () => {
    expect(parseToolPlan({})).toBeUndefined();
    expect(parseToolPlan({ tools: null, tool_choice: 'none' })).toBeUndefined();
    expect(parseToolPlan({ tools: [WEATHER], tool_choice: 'none' })).toBeUndefined();
  });

  it('reads required, a named function and parallel_tool_calls', () => {
    expect(parseToolPlan({ tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false })).toMatchObject({ mode: 'required', parallel: false });
    expect(parseToolPlan({ tools: [WEATHER, TIME], tool_choice: { type: 'function', function: { name: 'get_time' } } })).toMatchObject({
      mode: 'named',
      named: 'get_time',
    });
  });

  it('parameters without "type" get "type": "object" (other keywords kept), so arguments are always an object', () => {
    const plan = parseToolPlan({ tools: [tool({}), tool({ properties: { a: { type: 'string' } }, required: ['a'] }, 'g')] });
    expect(plan?.tools.map((t) => t.parameters)).toEqual([
      { type: 'object' },
      { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] },
    ]);
    const named = parseChatRequest({ model: 'm', messages: USER, tools: [tool({})], tool_choice: { type: 'function', function: { name: 'f' } } });
    expect(JSON.parse(named.input.sampling.responseFormat?.value as string).properties.arguments).toEqual({ type: 'object' });
  });

  it.each([
    [{ tools: [] }, 'tools'],
    [{ tools: {} }, 'tools'],
    [{ tools: [{ type: 'retrieval' }] }, 'tools[0]'],
    [{ tools: [WEATHER, { type: 'function' }] }, 'tools[1].function'],
    [{ tools: [{ type: 'function', function: { name: 'has space' } }] }, 'tools[0].function.name'],
    [{ tools: [{ type: 'function', function: { name: 'x'.repeat(65) } }] }, 'tools[0].function.name'],
    [{ tools: [{ type: 'function', function: { name: 'f', description: 3 } }] }, 'tools[0].function.description'],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: 'object' } }] }, 'tools[0].function.parameters'],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'array' } } }] }, 'tools[0].function.parameters'],
    [{ tools: [{ type: 'function', function: { name: 'f', strict: 'yes' } }] }, 'tools[0].function.strict'],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'str' } } } } }] }, 'tools[0].function.parameters'],
    [{ tools: [WEATHER, WEATHER] }, 'tools'],
    [{ tools: Array.from({ length: 129 }, (_, i) => ({ type: 'function', function: { name: `f${i}` } })) }, 'tools'],
    [{ tools: [{ type: 'function', function: { name: 'f', description: 'x'.repeat(70_000) } }] }, 'tools'],
    [{ tool_choice: 'auto' }, 'tool_choice'],
    [{ tool_choice: { type: 'function', function: { name: 'get_weather' } } }, 'tool_choice'],
    [{ tools: [WEATHER], tool_choice: 'always' }, 'tool_choice'],
    [{ tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'get_time' } } }, 'tool_choice'],
    [{ tools: [WEATHER], tool_choice: { type: 'function' } }, 'tool_choice'],
    [{ tools: [WEATHER], parallel_tool_calls: 'no' }, 'parallel_tool_calls'],
  ])('%j gets 400 naming %s', (body, param) => {
    expect(paramOf(() => parseToolPlan(body))).toBe(param);
  });
});

describe('parseChatRequest with tools', () => {
  it('auto: tools go into a system message, no output constraint', () => {
    const req = parseChatRequest({ model: 'm', messages: USER, tools: [WEATHER] });
    expect(req.tools?.mode).toBe('auto');
    expect(req.input.sampling.responseFormat).toBeUndefined();
    expect(req.input.messages[0].role).toBe('system');
    expect(req.input.messages[0].content).toContain('"name": "get_weather"');
    expect(req.input.messages[1]).toEqual(USER[0]);
  });

  it('named: the output is constrained to a call of that function', () => {
    const req = parseChatRequest({ model: 'm', messages: USER, tools: [WEATHER, TIME], tool_choice: { type: 'function', function: { name: 'get_weather' } } });
    const rf = req.input.sampling.responseFormat;
    expect(rf?.$case).toBe('jsonSchema');
    const schema = JSON.parse(rf?.value as string) as { properties: { name: { const: string }; arguments: unknown } };
    expect(schema.properties.name.const).toBe('get_weather');
    expect(schema.properties.arguments).toEqual(WEATHER.function.parameters);
  });

  it('none: no tools in the prompt, no parsing', () => {
    const req = parseChatRequest({ model: 'm', messages: USER, tools: [WEATHER], tool_choice: 'none' });
    expect(req.tools).toBeUndefined();
    expect(req.input.messages).toEqual(USER);
  });

  it('required with response_format gets 400 naming tool_choice; auto with it is allowed', () => {
    const rf = { response_format: { type: 'json_object' } };
    expect(paramOf(() => parseChatRequest({ model: 'm', messages: USER, tools: [WEATHER], tool_choice: 'required', ...rf }))).toBe('tool_choice');
    expect(parseChatRequest({ model: 'm', messages: USER, tools: [WEATHER], ...rf }).input.sampling.responseFormat).toEqual({ $case: 'jsonObject', value: true });
  });

  it('accepts the tool-call history: assistant tool_calls with null content, then the tool result', () => {
    const messages = [
      ...USER,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp_c": 18}' },
    ];
    const req = parseChatRequest({ model: 'm', messages, tools: [WEATHER] });
    expect(req.input.messages.slice(1)).toEqual([
      USER[0],
      { role: 'assistant', content: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' },
      { role: 'user', content: '<tool_response>\n{"temp_c": 18}\n</tool_response>' },
    ]);
  });

  it.each([
    [[{ role: 'user', content: 'x', tool_calls: [] }], 'messages[0].tool_calls'],
    [[{ role: 'assistant', content: null, tool_calls: {} }], 'messages[0].tool_calls'],
    [[{ role: 'assistant', tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] }], 'messages[0].tool_calls[0].id'],
    [[{ role: 'assistant', tool_calls: [{ id: 'c', type: 'code', function: { name: 'f', arguments: '{}' } }] }], 'messages[0].tool_calls[0].type'],
    [[{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { arguments: '{}' } }] }], 'messages[0].tool_calls[0].function.name'],
    [[{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: {} } }] }], 'messages[0].tool_calls[0].function.arguments'],
    [[{ role: 'tool', content: 'x' }], 'messages[0].tool_call_id'],
    [[{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }, { role: 'tool', tool_call_id: 'd', content: 'x' }], 'messages[1].tool_call_id'],
  ])('history %j gets 400 naming %s', (messages, param) => {
    expect(paramOf(() => parseChatRequest({ model: 'm', messages }))).toBe(param);
  });
});

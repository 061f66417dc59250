import type { common } from '@inlaid/proto';
import { pyJson, renderChat, toolCallChars, toolsSystemText } from './tool-prompt';
import type { ToolPlan } from './tools';

const PLAN: ToolPlan = {
  tools: [{ name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } }],
  mode: 'auto',
  parallel: true,
};

describe('pyJson', () => {
  it("writes Python json.dumps' separators and keeps non-ASCII", () => {
    expect(pyJson({ a: [1, 'é', null], b: { c: true }, d: undefined })).toBe('{"a": [1, "é", null], "b": {"c": true}}');
  });
});

describe('renderChat', () => {
  it('without tools or history the messages are unchanged', () => {
    const turns = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hi' },
    ];
    expect(renderChat(turns, undefined)).toEqual(turns);
  });

  it('appends the Hermes tools section to the system message, or adds one', () => {
    const tools = toolsSystemText(PLAN.tools, true);
    expect(tools).toContain('<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": ');
    expect(tools).toContain('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>');
    expect(renderChat([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }], PLAN)).toEqual([
      { role: 'system', content: `Be brief.\n\n${tools}` },
      { role: 'user', content: 'hi' },
    ]);
    expect(renderChat([{ role: 'user', content: 'hi' }], PLAN)).toEqual([
      { role: 'system', content: tools },
      { role: 'user', content: 'hi' },
    ]);
    expect(toolsSystemText(PLAN.tools, false)).toContain('You may call one function');
  });

  it('renders calls after the content and merges consecutive tool results into one user message', () => {
    const out = renderChat(
      [
        { role: 'user', content: 'Paris and Rome?' },
        {
          role: 'assistant',
          content: 'Checking.',
          toolCalls: [
            { id: 'a', name: 'get_weather', arguments: '{"city":"Paris"}' },
            { id: 'b', name: 'get_weather', arguments: 'not json' },
          ],
        },
        { role: 'tool', content: '18C', toolCallId: 'a' },
        { role: 'tool', content: '21C', toolCallId: 'b' },
        { role: 'assistant', content: 'Paris 18C, Rome 21C.' },
      ],
      undefined,
    );
    expect(out).toEqual([
      { role: 'user', content: 'Paris and Rome?' },
      {
        role: 'assistant',
        content:
          'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
          '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>',
      },
      { role: 'user', content: '<tool_response>\n18C\n</tool_response>\n<tool_response>\n21C\n</tool_response>' },
      { role: 'assistant', content: 'Paris 18C, Rome 21C.' },
    ]);
  });
});

describe('toolCallChars', () => {
  it('counts the names and arguments of every call in the history, once', () => {
    const messages = [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: '', toolCalls: { calls: [{ id: 'a', name: 'get', arguments: '{"x":1}' }, { id: 'b', name: 'put', arguments: '{}' }] } },
      { role: 'tool', content: 'ok', toolCallId: 'a' },
    ] as unknown as common.ChatMessage[];
    expect(toolCallChars(messages)).toBe(3 + 7 + 3 + 2);
    expect(toolCallChars([])).toBe(0);
  });
});

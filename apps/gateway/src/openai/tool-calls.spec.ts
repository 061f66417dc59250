import { assembleToolOutput, newCallId, toolCallParser } from './tool-calls';
import type { ToolPlan } from './tools';

const TOOLS = [{ name: 'get_weather', parameters: { type: 'object' } }];
const AUTO: ToolPlan = { tools: TOOLS, mode: 'auto', parallel: true };
const NAMED: ToolPlan = { tools: TOOLS, mode: 'named', named: 'get_weather', parallel: true };
const REQUIRED: ToolPlan = { tools: TOOLS, mode: 'required', parallel: true };

describe('newCallId', () => {
  it('is call_ and 24 hex digits, different each time', () => {
    const a = newCallId();
    expect(a).toMatch(/^call_[0-9a-f]{24}$/);
    expect(newCallId()).not.toBe(a);
  });
});

describe('assembleToolOutput', () => {
  it('auto: content around the calls without the whitespace next to them; null when there is none', () => {
    const text = ' Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n';
    const out = assembleToolOutput(toolCallParser(AUTO, () => 'call_x'), text, 'stop');
    expect(out).toEqual({
      content: ' Sure.',
      toolCalls: [{ id: 'call_x', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
      toolCallsFinish: true,
    });
    const only = assembleToolOutput(toolCallParser(AUTO), '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>\n', 'stop');
    expect(only.content).toBeNull();
    expect(only.toolCalls).toHaveLength(1);
  });

  it('auto without calls returns the text exactly', () => {
    expect(assembleToolOutput(toolCallParser(AUTO), ' It is sunny. \n', 'stop')).toEqual({ content: ' It is sunny. \n', toolCalls: [], toolCallsFinish: false });
  });

  it('finish tool_calls only when the choice stopped by itself with its calls complete', () => {
    const whole = '{"name": "get_weather", "arguments": {"city": "Oslo"}}';
    expect(assembleToolOutput(toolCallParser(NAMED), whole, 'stop').toolCallsFinish).toBe(true);
    expect(assembleToolOutput(toolCallParser(NAMED), whole, 'length').toolCallsFinish).toBe(false);
    const cut = assembleToolOutput(toolCallParser(NAMED), '{"name": "get_weather", "arguments": {"ci', 'stop');
    expect(cut.toolCalls.map((c) => c.function.arguments)).toEqual(['{"ci']);
    expect(cut.toolCallsFinish).toBe(false);
    expect(assembleToolOutput(toolCallParser(AUTO), 'no calls', 'stop').toolCallsFinish).toBe(false);
    expect(assembleToolOutput(toolCallParser(AUTO), '<tool_call>{"name": "get_weather"}', 'stop').toolCallsFinish).toBe(true);
  });

  it('named and required: the guided JSON becomes the calls, content null', () => {
    const named = assembleToolOutput(toolCallParser(NAMED, () => 'call_n'), '{"name": "get_weather", "arguments": {"city": "Oslo"}}', 'stop');
    expect(named).toEqual({
      content: null,
      toolCalls: [{ id: 'call_n', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Oslo"}' } }],
      toolCallsFinish: true,
    });
    const req = assembleToolOutput(toolCallParser(REQUIRED), '[{"name": "get_weather", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]', 'stop');
    expect(req.toolCalls.map((c) => c.function.arguments)).toEqual(['{}', '{"city": "Rome"}']);
    expect(new Set(req.toolCalls.map((c) => c.id)).size).toBe(2);
  });
});

import { HermesCallParser, parseHermesCall } from './hermes-calls';
import type { ToolEvent } from './tool-events';

const NAMES = new Set(['get_weather', 'get_time']);

function parser(): HermesCallParser {
  let n = 0;
  return new HermesCallParser(NAMES, () => `call_${n++}`);
}

/** Feeds `text` in pieces of `size` characters, then finishes. */
function run(text: string, size: number): ToolEvent[] {
  const p = parser();
  const out: ToolEvent[] = [];
  for (let i = 0; i < text.length; i += size) out.push(...p.push(text.slice(i, i + size)));
  return [...out, ...p.finish()];
}

function contentOf(events: ToolEvent[]): string {
  return events.map((e) => ('content' in e ? e.content : '')).join('');
}

describe('parseHermesCall', () => {
  it('reads name and arguments (object, JSON text or absent) of an offered tool', () => {
    expect(parseHermesCall(' {"name": "get_weather", "arguments": {"city": "Paris"}} ', NAMES)).toEqual({ name: 'get_weather', arguments: '{"city":"Paris"}' });
    expect(parseHermesCall('{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}', NAMES)).toEqual({ name: 'get_weather', arguments: '{"city":"Rome"}' });
    expect(parseHermesCall('{"name": "get_time"}', NAMES)).toEqual({ name: 'get_time', arguments: '{}' });
  });

  it.each(['{"name": "rm_rf", "arguments": {}}', '{"name": "get_time", "arguments": [1]}', '{"name": "get_time", "arguments": "x"}', '{"name": ', '[]'])(
    '%s is not a call',
    (block) => expect(parseHermesCall(block, NAMES)).toBeUndefined(),
  );
});

describe('HermesCallParser', () => {
  const TEXT = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';

  it.each([1, 3, 7, TEXT.length])('finds both calls whatever the delta size (%i), content outside the blocks', (size) => {
    const events = run(TEXT, size);
    expect(events.filter((e) => 'call' in e)).toEqual([
      { call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '' } } },
      { call: { index: 0, function: { arguments: '{"city":"Paris"}' } } },
      { call: { index: 1, id: 'call_1', type: 'function', function: { name: 'get_time', arguments: '' } } },
      { call: { index: 1, function: { arguments: '{}' } } },
    ]);
    // The newlines next to the calls are dropped, as the non-streamed message's content has them (tool-calls.ts).
    expect(contentOf(events)).toBe('Let me check.');
  });

  it('text without calls passes through unchanged; a partial tag and trailing whitespace held back until text follows', () => {
    const p = parser();
    expect(p.push('a <tool')).toEqual([{ content: 'a' }]);
    expect(p.push('s> b')).toEqual([{ content: ' <tools> b' }]);
    expect(p.push(' <')).toEqual([]);
    expect(p.push('\n')).toEqual([{ content: ' <' }]);
    expect(p.finish()).toEqual([{ content: '\n' }]);
    expect(p.calls).toBe(0);
  });

  it('whitespace next to a call is dropped; whitespace before later text is passed on with it', () => {
    const p = parser();
    expect(p.push('Sure.\n')).toEqual([{ content: 'Sure.' }]);
    expect(p.push('<tool_call>{"name": "get_time"}</tool_call>\n')).toHaveLength(2);
    expect(p.push('\n')).toEqual([]);
    expect(p.push('Done.')).toEqual([{ content: '\n\nDone.' }]);
    expect(p.push(' \n')).toEqual([]);
    expect(p.finish()).toEqual([]);
  });

  it('a long block in one-character deltas is parsed when it closes, in linear time', () => {
    const args = JSON.stringify({ q: 'x'.repeat(200_000) });
    const text = `<tool_call>{"name": "get_weather", "arguments": ${args}}</tool_call> ok`;
    const p = parser();
    const events: ToolEvent[] = [];
    const started = performance.now();
    for (const c of text) events.push(...p.push(c));
    const ms = performance.now() - started;
    events.push(...p.finish());
    expect(events.filter((e) => 'call' in e)).toEqual([
      { call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '' } } },
      { call: { index: 0, function: { arguments: args } } },
    ]);
    expect(contentOf(events)).toBe(' ok');
    // Rescanning the whole block on every push took seconds here (quadratic); one pass takes well under 1 s.
    expect(ms).toBeLessThan(1_500);
  });

  it('a block left open at the end still counts; a broken block stays content', () => {
    const open = run('<tool_call>\n{"name": "get_time", "arguments": {}}', 4);
    expect(open.filter((e) => 'call' in e)).toHaveLength(2);
    const broken = '<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call> done';
    expect(contentOf(run(broken, 5))).toBe(broken);
    const unknown = '<tool_call>{"name": "launch", "arguments": {}}';
    expect(contentOf(run(unknown, 5))).toBe(unknown);
  });
});

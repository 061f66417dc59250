import { GuidedCallParser } from './guided-calls';
import type { ToolEvent } from './tool-events';

function parser(shape: 'object' | 'array'): GuidedCallParser {
  let n = 0;
  return new GuidedCallParser(shape, () => `call_${n++}`);
}

function run(shape: 'object' | 'array', text: string, size: number): { events: ToolEvent[]; perPush: number[] } {
  const p = parser(shape);
  const events: ToolEvent[] = [];
  const perPush: number[] = [];
  for (let i = 0; i < text.length; i += size) {
    const out = p.push(text.slice(i, i + size));
    perPush.push(out.length);
    events.push(...out);
  }
  return { events: [...events, ...p.finish()], perPush };
}

/** Calls reassembled from the deltas, as a client does. */
function calls(events: ToolEvent[]): Array<{ id?: string; name?: string; arguments: string }> {
  const out: Array<{ id?: string; name?: string; arguments: string }> = [];
  for (const e of events) {
    if (!('call' in e)) continue;
    const c = (out[e.call.index] ??= { arguments: '' });
    if (e.call.id !== undefined) c.id = e.call.id;
    if (e.call.function.name !== undefined) c.name = e.call.function.name;
    c.arguments += e.call.function.arguments;
  }
  return out;
}

describe('GuidedCallParser', () => {
  const ONE = '{"name": "get_weather", "arguments": {"city": "Par}is \\" {", "days": [1, 2]}}';

  it.each([1, 2, 5, ONE.length])('named: one call, arguments reassemble exactly (delta size %i)', (size) => {
    const { events } = run('object', ONE, size);
    expect(calls(events)).toEqual([{ id: 'call_0', name: 'get_weather', arguments: '{"city": "Par}is \\" {", "days": [1, 2]}' }]);
    expect(events.every((e) => 'call' in e)).toBe(true);
    expect(events[0]).toEqual({ call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '' } } });
  });

  it('streams argument fragments as they arrive, one delta per push', () => {
    const { events, perPush } = run('object', ONE, 8);
    const fragments = events.slice(1).map((e) => ('call' in e ? e.call : undefined));
    expect(fragments.length).toBeGreaterThan(3);
    expect(fragments.every((f) => f?.id === undefined && f?.index === 0)).toBe(true);
    expect(Math.max(...perPush)).toBeLessThanOrEqual(1);
  });

  it('required: a list of calls, each with its own index and id, arguments before the name included', () => {
    const text = '[{"name": "get_time", "arguments": {}}, {"arguments": {"city": "Rome"}, "name": "get_weather"}, {"name": "get_time", "arguments": {"tz": "UTC"}}]';
    for (const size of [1, 4, text.length]) {
      expect(calls(run('array', text, size).events)).toEqual([
        { id: 'call_0', name: 'get_time', arguments: '{}' },
        { id: 'call_1', name: 'get_weather', arguments: '{"city": "Rome"}' },
        { id: 'call_2', name: 'get_time', arguments: '{"tz": "UTC"}' },
      ]);
    }
  });

  it('output cut before a name is passed on as content at the end', () => {
    const p = parser('object');
    expect(p.push('{"na')).toEqual([]);
    expect(p.finish()).toEqual([{ content: '{"na' }]);
    expect(p.calls).toBe(0);
  });

  it('truncated while the JSON is unclosed (depth above 0 or inside a string), not once it closes', () => {
    const p = parser('array');
    expect(p.truncated).toBe(false);
    p.push('[{"name": "get_weather", "arguments": {"city": "Pa');
    expect(p.truncated).toBe(true);
    p.push('ris"}}');
    expect([p.calls, p.truncated]).toEqual([1, true]);
    p.push(', {"name": "x", "arguments": {"a": "]}"');
    expect(p.truncated).toBe(true);
    p.push('}}] ');
    expect([p.calls, p.truncated]).toEqual([2, false]);
    const named = parser('object');
    named.push('{"name": "get_weather", "arguments": {}');
    expect(named.truncated).toBe(true);
    named.push('}');
    expect(named.truncated).toBe(false);
  });

  it('output cut inside the arguments keeps the call with the arguments so far', () => {
    const { events } = run('object', '{"name": "get_weather", "arguments": {"city": "Pa', 3);
    expect(calls(events)).toEqual([{ id: 'call_0', name: 'get_weather', arguments: '{"city": "Pa' }]);
  });
});

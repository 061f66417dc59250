/**
 * Mistral's newer call syntax, `[TOOL_CALLS]name[ARGS]{...}` (mistral-calls.ts), read by the `mistral` parser
 * (json-calls.ts) next to its older list. Every text is also fed split at each character boundary and one
 * character at a time: the events must reassemble to the message the whole text gives.
 */
import { JsonCallParser, MISTRAL } from './json-calls';
import { assembleToolOutput, toolCallParser } from './tool-calls';
import type { ToolEvent } from './tool-events';

const NAMES = new Set(['get_weather', 'get_time']);
const PARIS = { name: 'get_weather', arguments: '{"city":"Paris"}' };
const TIME_CALL = { name: 'get_time', arguments: '{}' };

function ids(): () => string {
  let n = 0;
  return () => `call_${n++}`;
}

function run(pieces: string[]): ToolEvent[] {
  const p = new JsonCallParser(MISTRAL, NAMES, ids());
  return [...pieces.flatMap((piece) => p.push(piece)), ...p.finish()];
}

interface Message {
  content: string;
  calls: { id: string; name: string; arguments: string }[];
}

function message(events: ToolEvent[]): Message {
  let content = '';
  const calls: Message['calls'] = [];
  for (const e of events) {
    if ('content' in e) content += e.content;
    else if (e.call.id !== undefined) calls[e.call.index] = { id: e.call.id, name: e.call.function.name ?? '', arguments: e.call.function.arguments };
    else (calls[e.call.index] as { arguments: string }).arguments += e.call.function.arguments;
  }
  return { content, calls };
}

/** The whole text's message, checked equal to the one of every split in two and of single characters. */
function sameAtEveryCut(text: string): { content: string; calls: { name: string; arguments: string }[] } {
  const whole = message(run([text]));
  for (let i = 0; i <= text.length; i++) expect(message(run([text.slice(0, i), text.slice(i)]))).toEqual(whole);
  expect(message(run([...text]))).toEqual(whole);
  return { content: whole.content, calls: whole.calls.map(({ name, arguments: args }) => ({ name, arguments: args })) };
}

describe('mistral parser, newer templates: name[ARGS]{...}', () => {
  it.each([
    ['with its markers', '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', [PARIS]],
    ['the markers decoded away', 'get_weather{"city": "Paris"}', [PARIS]],
    ['repeated', '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}', [PARIS, TIME_CALL]],
    ['repeated, markers decoded away', 'get_weather{"city": "Paris"}get_time{}', [PARIS, TIME_CALL]],
    ['with [CALL_ID]', '[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}', [TIME_CALL]],
    ['a call id glued to the name (markers decoded away)', 'get_timea1b2c3d4e{}', [TIME_CALL]],
    ['whitespace around', ' \n[TOOL_CALLS]get_time[ARGS] {}\n ', [TIME_CALL]],
    ['braces and markers inside strings', 'get_weather{"city": "P}a{r\\"is[ARGS]"}', [{ name: 'get_weather', arguments: '{"city":"P}a{r\\"is[ARGS]"}' }]],
    ['after the older list', '[TOOL_CALLS][{"name": "get_time", "arguments": {}}][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', [TIME_CALL, PARIS]],
  ])('%s: calls, no content, at every cut', (_label, text, calls) => {
    expect(sameAtEveryCut(text)).toEqual({ content: '', calls });
  });

  it('content around the calls stays content, without the whitespace next to them', () => {
    expect(sameAtEveryCut('Let me check. [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"} Done.')).toEqual({ content: 'Let me check.Done.', calls: [PARIS] });
  });

  it.each([
    ['prose starting with a tool name', 'get_weather is the tool for that.'],
    ['prose starting like a tool name', 'get me the weather'],
    ['an unknown tool', '[TOOL_CALLS]rm_rf[ARGS]{}'],
    ['malformed arguments', 'get_weather{"city": } then text'],
    ['arguments not an object', '[TOOL_CALLS]get_weather[ARGS][1]'],
    ['a call cut short by the end of the output', '[TOOL_CALLS]get_weather[ARGS]{"city": "Par'],
    ['a marker cut short', 'get_weather[ARG'],
    ['another marker', 'get_weather[INST]{}'],
    ['an id without arguments', 'get_time[CALL_ID]a1b2c3d4e'],
    ['a glued id of the wrong length', 'get_timeabc{}'],
    ['a name alone', 'get_time'],
  ])('%s: plain content, unchanged', (_label, text) => {
    expect(sameAtEveryCut(text)).toEqual({ content: text, calls: [] });
  });

  it('a bad call after a good one: the good one stays a call, the rest is content', () => {
    expect(sameAtEveryCut('[TOOL_CALLS]get_time[ARGS]{}[TOOL_CALLS]nope[ARGS]{}')).toEqual({ content: '[TOOL_CALLS]nope[ARGS]{}', calls: [TIME_CALL] });
  });

  it('prose passes on at once; a name is held only while it can be a call, then sent when its arguments close', () => {
    const p = new JsonCallParser(MISTRAL, NAMES, ids());
    expect(p.push('Sure')).toEqual([{ content: 'Sure' }]);
    const q = new JsonCallParser(MISTRAL, NAMES, ids());
    expect(q.push('get_wea')).toEqual([]);
    expect(q.push('ther{"city": ')).toEqual([]);
    expect(q.push('"Paris"}get_t')).toEqual([
      { call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '' } } },
      { call: { index: 0, function: { arguments: '{"city":"Paris"}' } } },
    ]);
    expect(q.push('ime{}')).toEqual([{ call: { index: 1, id: 'call_1', type: 'function', function: { name: 'get_time', arguments: '' } } }, { call: { index: 1, function: { arguments: '{}' } } }]);
    expect(q.finish()).toEqual([]);
    expect(q.calls).toBe(2);
  });

  it('auto with a mistral model: a whole response, finish tool_calls, gateway call ids', () => {
    const plan = { tools: [{ name: 'get_time', parameters: { type: 'object' } }], mode: 'auto' as const, parallel: true, support: { parser: 'mistral' as const, native: true } };
    const out = assembleToolOutput(toolCallParser(plan, () => 'call_x'), 'get_timea1b2c3d4e{}', 'stop');
    expect(out).toEqual({ content: null, toolCalls: [{ id: 'call_x', type: 'function', function: TIME_CALL }], toolCallsFinish: true });
  });
});

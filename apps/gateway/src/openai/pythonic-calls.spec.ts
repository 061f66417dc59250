/**
 * The `pythonic` parser (pythonic-calls.ts, python-literals.ts, json-calls.ts): `[get_weather(city="Paris")]`
 * lists where the output starts, literals only. Every text is also fed split at each character boundary and one
 * character at a time: the events must reassemble to the message the whole text gives.
 */
import { JsonCallParser, PYTHONIC } from './json-calls';
import { pythonicCalls } from './python-literals';
import { assembleToolOutput, toolCallParser } from './tool-calls';
import type { ToolEvent } from './tool-events';
import type { ToolSupport } from './tool-format';
import type { ToolPlan } from './tools';
import { toolMessage as message } from '../testing/tool-message';

const NAMES = new Set(['get_weather', 'get_time']);
const PARIS = { name: 'get_weather', arguments: '{"city":"Paris"}' };
const TIME_CALL = { name: 'get_time', arguments: '{}' };
const SUPPORT: ToolSupport = { parser: 'pythonic', native: true };

function ids(): () => string {
  let n = 0;
  return () => `call_${n++}`;
}

function run(pieces: string[]): ToolEvent[] {
  const p = new JsonCallParser(PYTHONIC, NAMES, ids());
  return [...pieces.flatMap((piece) => p.push(piece)), ...p.finish()];
}

interface Message {
  content: string;
  calls: { name: string; arguments: string }[];
}


/** The whole text's message, checked equal to the one of every split in two and of single characters. */
function sameAtEveryCut(text: string): Message {
  const whole = message(run([text]));
  for (let i = 0; i <= text.length; i++) expect(message(run([text.slice(0, i), text.slice(i)]))).toEqual(whole);
  expect(message(run([...text]))).toEqual(whole);
  return whole;
}

describe('pythonic parser', () => {
  it.each([
    ['one call', '[get_weather(city="Paris")]', [PARIS]],
    ['several, single quotes, no arguments', "[get_weather(city='Paris'), get_time()]", [PARIS, TIME_CALL]],
    ["Llama 4's markers", '<|python_start|>[get_time()]<|python_end|>', [TIME_CALL]],
    ['spread over lines, trailing commas', '\n[\n  get_time(),\n  get_weather(city = "Paris",),\n]\n', [TIME_CALL, PARIS]],
    ['brackets and quotes inside strings', `[get_weather(city="a]b)c'd")]`, [{ name: 'get_weather', arguments: '{"city":"a]b)c\'d"}' }]],
    ['a triple-quoted string', `[get_weather(city="""Pa"r""is""")]`, [{ name: 'get_weather', arguments: '{"city":"Pa\\"r\\"\\"is"}' }]],
    ['spaces before a call\'s parenthesis and around commas', '[ get_time () ,\tget_weather (city="Paris") ]', [TIME_CALL, PARIS]],
  ])('%s: calls, no content, at every cut', (_label, text, calls) => {
    expect(sameAtEveryCut(text)).toEqual({ content: '', calls });
  });

  it('every literal kind becomes its JSON value', () => {
    const text =
      `[get_weather(city="P\\n'a\\x41\\u00e9", days=-3, ratio=1.5e2, ok=True, no=False, none=None, tags=['a', "b"], ` +
      `pair=(1, 2), one=(7), opts={'k': [1, {"x": False}], 'e': {}}, hex=0x1F, big=1_000, s='''tri"ple''' "cat", raw=r"C:\\d")]`;
    const expected = {
      city: "P\n'aAé",
      days: -3,
      ratio: 150,
      ok: true,
      no: false,
      none: null,
      tags: ['a', 'b'],
      pair: [1, 2],
      one: 7,
      opts: { k: [1, { x: false }], e: {} },
      hex: 31,
      big: 1000,
      s: 'tri"plecat',
      raw: 'C:\\d',
    };
    const whole = sameAtEveryCut(text);
    expect(whole.content).toBe('');
    expect(JSON.parse(whole.calls[0]?.arguments ?? '')).toEqual(expected);
  });

  it.each([
    ['a positional argument', '[get_weather("Paris")]'],
    ['a name as a value', '[get_weather(city=paris)]'],
    ['an expression', '[get_weather(city="Paris"), get_time(x=1+2)]'],
    ['a call as a value', '[get_weather(city=__import__("os").getcwd())]'],
    ['an f-string', '[get_weather(city=f"{x}")]'],
    ['a bytes literal', '[get_weather(city=b"x")]'],
    ['JSON literals', '[get_weather(ok=true)]'],
    ['a keyword given twice', '[get_time(a=1, a=2)]'],
    ['a set', '[get_time(a={1, 2})]'],
    ['a number key', '[get_time(a={1: 2})]'],
    ['a complex number', '[get_time(a=1j)]'],
    ['an unknown tool', '[rm_rf()]'],
    ['an empty list', '[]'],
    ['a list that is not all calls', '[get_time(), 3]'],
    ['a list of numbers in prose', '[1, 2] are numbers'],
    ['a call cut short by the end of the output', '[get_weather(city="Par'],
    ['a newline inside a one-line string', "[get_weather(city='Pa\nris')]"],
    ['a comment', '[get_time() # now\n]'],
    ['mismatched brackets', '[get_time(]'],
    ['a call after prose', 'Sure: [get_time()]'],
    ['a partial marker', '<|python_sta'],
    ['prose in brackets', '[see the appendix for details on this topic'],
    ['prose in brackets, closed', '[see the appendix] for details'],
    ['a name without a call', '[get_time]'],
    ['two calls without a comma', '[get_time() get_time()]'],
    ['a nested list', '[[get_time()]]'],
    ['a comma before any call', '[, get_time()]'],
    ['a string between the calls', '[get_time(), "x"]'],
  ])('%s: plain content, unchanged', (_label, text) => {
    expect(sameAtEveryCut(text)).toEqual({ content: text, calls: [] });
  });

  it('text after the list is content without the whitespace next to it', () => {
    expect(sameAtEveryCut('[get_time()]\n\nDone.')).toEqual({ content: 'Done.', calls: [TIME_CALL] });
  });

  it('values nested beyond the JSON depth limit are content, not a stack overflow', () => {
    const deep = `[get_time(a=${'['.repeat(5000)}${']'.repeat(5000)})]`;
    expect(message(run([deep]))).toEqual({ content: deep, calls: [] });
  });

  it('prose in brackets passes on at once; a list is held until it closes', () => {
    const p = new JsonCallParser(PYTHONIC, NAMES, ids());
    expect(message(p.push('[Note: the'))).toEqual({ content: '[Note: the', calls: [] });
    const words = new JsonCallParser(PYTHONIC, NAMES, ids());
    expect(message(words.push('[see t'))).toEqual({ content: '[see t', calls: [] });
    const spaced = new JsonCallParser(PYTHONIC, NAMES, ids());
    expect(spaced.push('[get_time ')).toEqual([]);
    expect(message(spaced.push('x'))).toEqual({ content: '[get_time x', calls: [] });
    const after = new JsonCallParser(PYTHONIC, NAMES, ids());
    expect(after.push('[get_time() ')).toEqual([]);
    expect(message(after.push('and'))).toEqual({ content: '[get_time() and', calls: [] });
    const q = new JsonCallParser(PYTHONIC, NAMES, ids());
    expect(q.push('[get_time(), get_weather(city="Pa')).toEqual([]);
    expect(q.push('ris")]')).toEqual([
      { call: { index: 0, id: 'call_0', type: 'function', function: { name: 'get_time', arguments: '' } } },
      { call: { index: 0, function: { arguments: '{}' } } },
      { call: { index: 1, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } } },
      { call: { index: 1, function: { arguments: '{"city":"Paris"}' } } },
    ]);
  });

  it('pythonicCalls: literals only, offered tools only', () => {
    expect(pythonicCalls('[get_time(when=None)]', NAMES)).toEqual([{ name: 'get_time', arguments: '{"when":null}' }]);
    expect(pythonicCalls('[get_time(when=constructor)]', NAMES)).toBeUndefined();
    expect(pythonicCalls('[get_time(x={"__proto__": 1})]', NAMES)).toEqual([{ name: 'get_time', arguments: '{"x":{"__proto__":1}}' }]);
    expect(pythonicCalls('[get_time(n=007)]', NAMES)).toBeUndefined();
    expect(pythonicCalls('[get_time(n=1e999)]', NAMES)).toBeUndefined();
    expect(pythonicCalls('[get_time(s="\\N{BULLET}")]', NAMES)).toBeUndefined();
  });

  it('auto with a pythonic model: a whole response, finish tool_calls', () => {
    const plan: ToolPlan = { tools: [{ name: 'get_time', parameters: { type: 'object' } }], mode: 'auto', parallel: true, support: SUPPORT };
    const out = assembleToolOutput(toolCallParser(plan, () => 'call_x'), '[get_time()]', 'stop');
    expect(out).toEqual({ content: null, toolCalls: [{ id: 'call_x', type: 'function', function: TIME_CALL }], toolCallsFinish: true });
  });

  it('required / named with a pythonic model: the guided output is the bare JSON call, streamed equal to whole', () => {
    const plan: ToolPlan = { tools: [{ name: 'get_weather', parameters: { type: 'object' } }], mode: 'named', named: 'get_weather', parallel: true, support: SUPPORT };
    const text = '{"name": "get_weather", "arguments": {"city": "Paris"}}';
    const whole = assembleToolOutput(toolCallParser(plan, ids()), text, 'stop');
    expect(whole.toolCalls.map((c) => c.function)).toEqual([{ name: 'get_weather', arguments: '{"city": "Paris"}' }]);
    const parser = toolCallParser(plan, ids());
    expect(message([...[...text].flatMap((c) => parser.push(c)), ...parser.finish()])).toEqual({ content: '', calls: [{ name: 'get_weather', arguments: '{"city": "Paris"}' }] });
  });
});

describe('pythonic reader on a long open value', () => {
  it('reads 300k characters fed in 4-character pieces in linear time (each feed scans only the new text)', () => {
    const value = 'a'.repeat(300_000);
    const pieces = ['[get_weather(city="'];
    for (let i = 0; i < value.length; i += 4) pieces.push(value.slice(i, i + 4));
    pieces.push('")]');
    const t0 = Date.now();
    const got = message(run(pieces));
    expect(Date.now() - t0).toBeLessThan(1500); // 2.3 s at 200k and 12 s at 400k when every feed re-read the value
    expect(got.content).toBe('');
    expect(got.calls).toEqual([{ name: 'get_weather', arguments: JSON.stringify({ city: value }) }]);
  });
});

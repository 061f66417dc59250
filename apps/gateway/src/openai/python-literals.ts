/**
 * A pythonic call list as data (pure): `[get_weather(city="Paris", days=3), get_time()]`, what vLLM's `pythonic`
 * parser reads with Python's `ast`. Nothing is evaluated: this is a parser of Python's literal syntax only, and any
 * other expression (a name, an operator, a call as an argument, an f-string) makes the whole list not calls.
 *
 * Accepted: a non-empty list of calls `name(keyword=value, ...)` (keywords only, each once, trailing commas allowed)
 * of offered tools; values are strings (quotes ' " ''' """, the prefixes r and u, Python's escapes, adjacent strings
 * joined), numbers (decimal, hex, octal, binary, floats, `_` separators, unary + and -), True / False / None, lists,
 * tuples (as lists) and dicts with string keys. Arguments come back as compact JSON text, as the JSON formats give
 * them (hermes-calls.ts callOf).
 */
import { callOf } from './hermes-calls';
import type { Call } from './call-reader';
import { MAX_JSON_DEPTH } from './json-depth';

type Value = string | number | boolean | null | Value[] | { [key: string]: Value };

class NotLiteral extends Error {}

const SPACE = /[ \t\r\n\f]/;
const TOOL = /[A-Za-z0-9_-]+/y;
const KEYWORD = /[A-Za-z_][A-Za-z0-9_]*/y;
const NUMBER = /0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?/y;
const CONSTANTS = new Map<string, Value>([
  ['True', true],
  ['False', false],
  ['None', null],
]);
const SIMPLE_ESCAPES: Record<string, string> = { '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\n': '' };
const HEX_ESCAPES: Record<string, number> = { x: 2, u: 4, U: 8 };

class LiteralParser {
  private pos = 0;
  private depth = 0;

  constructor(private readonly text: string) {}

  /** The list's calls as (name, keyword arguments); throws NotLiteral otherwise. */
  callList(): { name: string; args: Record<string, Value> }[] {
    this.expect('[');
    const calls: { name: string; args: Record<string, Value> }[] = [];
    this.items(']', () => calls.push(this.call()));
    this.space();
    if (this.pos !== this.text.length || calls.length === 0) throw new NotLiteral();
    return calls;
  }

  private call(): { name: string; args: Record<string, Value> } {
    const name = this.match(TOOL);
    this.expect('(');
    const args: Record<string, Value> = Object.create(null) as Record<string, Value>;
    this.items(')', () => {
      const key = this.match(KEYWORD);
      if (CONSTANTS.has(key) || key in args) throw new NotLiteral(); // True=..., a keyword given twice
      this.expect('=');
      args[key] = this.value();
    });
    return { name, args };
  }

  private value(): Value {
    if (++this.depth > MAX_JSON_DEPTH) throw new NotLiteral();
    const v = this.valueAt();
    this.depth--;
    return v;
  }

  private valueAt(): Value {
    this.space();
    const c = this.text[this.pos];
    if (c === '[') return this.sequence('[', ']');
    if (c === '(') return this.tuple();
    if (c === '{') return this.dict();
    if (c === '-' || c === '+') {
      this.pos++;
      const v = this.value();
      if (typeof v !== 'number') throw new NotLiteral();
      return c === '-' ? -v : v;
    }
    if (c !== undefined && /[0-9.]/.test(c)) return this.number();
    if (this.stringAhead()) return this.strings();
    const word = this.match(KEYWORD);
    if (!CONSTANTS.has(word)) throw new NotLiteral();
    return CONSTANTS.get(word) as Value;
  }

  /** Comma-separated items up to `close` (a trailing comma allowed); the opening bracket is already taken. */
  private items(close: string, item: () => void): void {
    if (this.take(close)) return;
    for (;;) {
      item();
      if (this.take(close)) return;
      this.expect(',');
      if (this.take(close)) return;
    }
  }

  private sequence(open: string, close: string): Value[] {
    this.expect(open);
    const items: Value[] = [];
    this.items(close, () => items.push(this.value()));
    return items;
  }

  /** `()` and `(a, ...)` are tuples (lists in JSON); `(a)` is a. */
  private tuple(): Value {
    this.expect('(');
    if (this.take(')')) return [];
    const items = [this.value()];
    if (this.take(')')) return items[0] as Value;
    this.expect(',');
    this.items(')', () => items.push(this.value()));
    return items;
  }

  private dict(): { [key: string]: Value } {
    this.expect('{');
    const out: { [key: string]: Value } = Object.create(null) as { [key: string]: Value };
    this.items('}', () => {
      const key = this.value();
      if (typeof key !== 'string') throw new NotLiteral();
      this.expect(':');
      out[key] = this.value();
    });
    return out;
  }

  private number(): number {
    const raw = this.match(NUMBER);
    const next = this.text[this.pos];
    if (next !== undefined && /[A-Za-z0-9_.]/.test(next)) throw new NotLiteral(); // 1j, 1.2.3, 0x1g
    const digits = raw.replace(/_/g, '');
    if (/^0+[1-9]\d*$/.test(digits)) throw new NotLiteral(); // Python refuses leading zeros (007)
    const v = Number(digits);
    if (!Number.isFinite(v)) throw new NotLiteral();
    return v;
  }

  private stringAhead(): boolean {
    const m = /[rRuU]?['"]/y;
    m.lastIndex = this.pos;
    return m.test(this.text);
  }

  /** Adjacent string literals, joined as Python joins them. */
  private strings(): string {
    let out = this.string();
    for (;;) {
      const at = this.pos;
      this.space();
      if (!this.stringAhead()) {
        this.pos = at;
        return out;
      }
      out += this.string();
    }
  }

  private string(): string {
    let raw = false;
    const prefix = this.text[this.pos] as string;
    if (prefix !== '"' && prefix !== "'") {
      raw = prefix === 'r' || prefix === 'R';
      this.pos++;
    }
    const q = this.text[this.pos] as string;
    const quote = this.text.startsWith(q.repeat(3), this.pos) ? q.repeat(3) : q;
    this.pos += quote.length;
    let out = '';
    for (;;) {
      if (this.pos >= this.text.length) throw new NotLiteral();
      if (this.text.startsWith(quote, this.pos)) {
        this.pos += quote.length;
        return out;
      }
      const c = this.text[this.pos++] as string;
      if (c === '\n' && quote.length === 1) throw new NotLiteral();
      if (c !== '\\') out += c;
      else if (raw) out += c + (this.text[this.pos++] ?? '');
      else out += this.escape();
    }
  }

  private escape(): string {
    const c = this.text[this.pos++];
    if (c === undefined) throw new NotLiteral();
    const simple = SIMPLE_ESCAPES[c];
    if (simple !== undefined) return simple;
    if (/[0-7]/.test(c)) {
      const m = /[0-7]{0,2}/y;
      m.lastIndex = this.pos;
      const more = (m.exec(this.text) as RegExpExecArray)[0];
      this.pos += more.length;
      return String.fromCodePoint(parseInt(c + more, 8));
    }
    const width = HEX_ESCAPES[c];
    if (width !== undefined) {
      const hex = this.text.slice(this.pos, this.pos + width);
      if (!new RegExp(`^[0-9a-fA-F]{${width}}$`).test(hex)) throw new NotLiteral();
      this.pos += width;
      const code = parseInt(hex, 16);
      if (code > 0x10ffff) throw new NotLiteral();
      return String.fromCodePoint(code);
    }
    if (c === 'N') throw new NotLiteral(); // \N{name}: not supported
    return '\\' + c; // Python keeps an unknown escape as written
  }

  private space(): void {
    while (this.pos < this.text.length && SPACE.test(this.text[this.pos] as string)) this.pos++;
  }

  private take(c: string): boolean {
    this.space();
    if (this.text[this.pos] !== c) return false;
    this.pos++;
    return true;
  }

  private expect(c: string): void {
    if (!this.take(c)) throw new NotLiteral();
  }

  private match(re: RegExp): string {
    this.space();
    re.lastIndex = this.pos;
    const m = re.exec(this.text);
    if (m === null) throw new NotLiteral();
    this.pos += m[0].length;
    return m[0];
  }
}

/** The calls of a whole pythonic list, or undefined when it is not (only) literal calls of offered tools. */
export function pythonicCalls(text: string, names: ReadonlySet<string>): Call[] | undefined {
  let list: { name: string; args: Record<string, Value> }[];
  try {
    list = new LiteralParser(text).callList();
  } catch (err) {
    if (err instanceof NotLiteral) return undefined;
    throw err;
  }
  const calls = list.map((c) => callOf({ name: c.name, arguments: c.args }, names));
  return calls.every((c) => c !== undefined) ? (calls as Call[]) : undefined;
}

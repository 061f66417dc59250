/**
 * The `pythonic` format's value (pure), read by json-calls.ts: a Python list of calls where the output starts,
 * `[get_weather(city="Paris"), get_time()]` (vLLM's `pythonic` parser; Llama 3.2 / 4 pythonic templates), parsed
 * as literals only (python-literals.ts).
 *
 * The list is held until its bracket closes, Python's strings (' " ''' """, escapes) and nesting followed. It ends
 * early as content on text that cannot be a call list: a closing bracket that does not match, a newline inside a
 * one-line string, a comment, or between the calls anything but `name (`, then after its `)` a `,` or the `]`,
 * whitespace around them (so `[1, 2]`, `[Note: ...]` or `[see the appendix` pass on at once).
 */
import type { Call, CallReader } from './call-reader';
import { pythonicCalls } from './python-literals';

const CLOSE: Record<string, string> = { ']': '[', ')': '(', '}': '{' };
const NAME_CHAR = /[A-Za-z0-9_-]/;
const SPACE = /\s/;

/** Where the reader is between the calls, inside the list: before a call's name (after `[` or `,`), in the name,
 * after the name (spaces before its `(`), after the call's `)`. */
type Between = 'start' | 'name' | 'afterName' | 'afterCall';

export class PythonListReader implements CallReader {
  /** The value's text from `base` on (what is read is dropped after each feed: appending to a string and then
   * indexing it flattens the whole string in V8, so keeping all of it made every feed O(length)). */
  private text = '';
  private base = 0;
  /** The next character to read, counted from the value's start. */
  private at = 0;
  private readonly open: string[] = [];
  /** The quote of the string being read (one or three characters); null outside strings. */
  private quote: string | null = null;
  private between: Between = 'start';

  constructor(private readonly names: ReadonlySet<string>) {}

  feed(text: string): number | undefined {
    this.text = this.text.slice(this.at - this.base) + text;
    this.base = this.at;
    while (this.at < this.end()) {
      const c = this.text[this.at - this.base] as string;
      if (this.quote !== null) {
        const step = this.inString(c);
        if (step === 0) return undefined; // a quote's neighbours not here yet
        if (step < 0) return this.at;
        this.at += step;
        continue;
      }
      if ((this.open.length === 1 && !this.betweenCalls(c)) || c === '#') return this.at;
      if (c === '"' || c === "'") {
        if (this.end() - this.at < 3) return undefined; // one quote or three?
        this.quote = this.text.startsWith(c.repeat(3), this.at - this.base) ? c.repeat(3) : c;
        this.at += this.quote.length;
        continue;
      }
      const opener = CLOSE[c];
      if (opener !== undefined) {
        if (this.open.pop() !== opener) return this.at + 1;
        if (this.open.length === 0) return this.at + 1;
      } else if (c === '[' || c === '(' || c === '{') this.open.push(c);
      this.at++;
    }
    return undefined;
  }

  /** Whether `c`, read inside the list between the calls, may continue a call list (and the step it takes). */
  private betweenCalls(c: string): boolean {
    const space = SPACE.test(c);
    switch (this.between) {
      case 'start':
        if (!NAME_CHAR.test(c)) return space || c === ']';
        this.between = 'name';
        return true;
      case 'name':
        if (NAME_CHAR.test(c)) return true;
        return this.afterName(c, space);
      case 'afterName':
        return this.afterName(c, space);
      case 'afterCall':
        if (c === ',') this.between = 'start';
        return space || c === ',' || c === ']';
    }
  }

  /** After a call's name: spaces, then its `(`. */
  private afterName(c: string, space: boolean): boolean {
    if (c === '(') this.between = 'afterCall';
    else if (space) this.between = 'afterName';
    return space || c === '(';
  }

  /** The value's length so far. */
  private end(): number {
    return this.base + this.text.length;
  }

  calls(value: string): Call[] | undefined {
    return this.open.length === 0 && this.quote === null ? pythonicCalls(value, this.names) : undefined;
  }

  /** Characters read inside a string at `c`; 0: wait for more text; -1: not Python (a newline in '...'). */
  private inString(c: string): number {
    const quote = this.quote as string;
    if (c === '\\') return this.at + 1 < this.end() ? 2 : 0;
    if (c === '\n' && quote.length === 1) return -1;
    if (c !== quote[0]) return 1;
    if (quote.length === 1) {
      this.quote = null;
      return 1;
    }
    if (this.end() - this.at < 3) return 0;
    if (!this.text.startsWith(quote, this.at - this.base)) return 1;
    this.quote = null;
    return 3;
  }
}

/** The reader of a value starting with `c`: a list. */
export function pythonicReader(c: string, names: ReadonlySet<string>): CallReader | undefined {
  return c === '[' ? new PythonListReader(names) : undefined;
}

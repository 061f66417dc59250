/**
 * `tool_choice: "required"` or a named function: the output is JSON the worker's grammar constrained to one call
 * object `{"name": ..., "arguments": {...}}` (named) or a list of them (required), tool-schema.ts; the arguments'
 * key is "parameters" in the llama3_json format. This scans it
 * character by character as it streams: a call's opening delta goes out once its name is complete, then its
 * arguments text (the raw JSON, whatever the key order) in fragments as they arrive. Should the output hold
 * no call at all (cut short by max_tokens before a name), it is passed on as content when it ends.
 */
import { JsonScan } from './json-scan';
import { callEvents, type ToolCallParser, type ToolEvent } from './tool-events';

interface Value {
  readonly key: 'name' | 'arguments' | 'other';
  /** Starts with `{` or `[`: ends when the depth is back at the call's. */
  readonly container: boolean;
  /** Starts with `"`: ends when the string closes. Otherwise a literal, ended by `,` or `}`. */
  readonly string: boolean;
  raw: string;
}

interface CallScan {
  expect: 'key' | 'colon' | 'value' | 'comma';
  /** The raw key literal being read; null between keys. */
  keyRaw: string | null;
  key: string;
  value: Value | null;
  name?: string;
  /** Index once its opening delta went out. */
  index?: number;
  /** Arguments text not yet sent. */
  args: string;
}

const SPACE = /\s/;

export class GuidedCallParser implements ToolCallParser {
  private readonly callDepth: number;
  private readonly scan = new JsonScan();
  private call: CallScan | null = null;
  private opened = 0;
  private text = '';

  constructor(
    shape: 'object' | 'array',
    private readonly newId: () => string,
    /** The key of the call's arguments: "parameters" in the llama3_json format (tool-format.ts). */
    private readonly argsKey: 'arguments' | 'parameters' = 'arguments',
  ) {
    this.callDepth = shape === 'object' ? 1 : 2;
  }

  get calls(): number {
    return this.opened;
  }

  get truncated(): boolean {
    return this.scan.depth > 0 || this.scan.inString;
  }

  push(text: string): ToolEvent[] {
    const out: ToolEvent[] = [];
    this.text += text;
    for (const c of text) this.feed(c, out);
    if (this.call !== null) this.flush(this.call, out);
    return out;
  }

  finish(): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.call !== null) this.flush(this.call, out);
    this.call = null;
    if (this.opened === 0 && this.text !== '') out.push({ content: this.text });
    this.text = '';
    return out;
  }

  private feed(c: string, out: ToolEvent[]): void {
    const wasInString = this.scan.inString;
    const depthBefore = this.scan.depth;
    this.scan.step(c);

    const call = this.call;
    if (call === null) {
      if (!wasInString && c === '{' && depthBefore === this.callDepth - 1) this.call = { expect: 'key', keyRaw: null, key: '', value: null, args: '' };
      return;
    }
    const v = call.value;
    if (v !== null) {
      const literalEnds = !v.container && !v.string && !wasInString && (c === ',' || c === '}') && depthBefore === this.callDepth;
      if (!literalEnds) {
        this.extend(call, v, c);
        if ((v.container && !this.scan.inString && this.scan.depth === this.callDepth) || (v.string && !this.scan.inString)) this.endValue(call, out);
        return;
      }
      this.endValue(call, out);
    }
    if (call.keyRaw !== null) {
      call.keyRaw += c;
      if (!this.scan.inString) {
        call.key = JSON.parse(call.keyRaw) as string;
        call.keyRaw = null;
        call.expect = 'colon';
      }
      return;
    }
    if (SPACE.test(c)) return;
    if (call.expect === 'key' && c === '"') call.keyRaw = c;
    else if (call.expect === 'colon' && c === ':') call.expect = 'value';
    else if (call.expect === 'comma' && c === ',') call.expect = 'key';
    else if (call.expect === 'value') this.startValue(call, c);
    else if (c === '}') this.endCall(call, out);
  }

  private startValue(call: CallScan, c: string): void {
    const key = call.key === 'name' ? 'name' : call.key === this.argsKey ? 'arguments' : 'other';
    call.value = { key, container: c === '{' || c === '[', string: c === '"', raw: '' };
    call.expect = 'comma';
    this.extend(call, call.value, c);
  }

  private extend(call: CallScan, v: Value, c: string): void {
    v.raw += c;
    if (v.key === 'arguments') call.args += c;
  }

  private endValue(call: CallScan, out: ToolEvent[]): void {
    const v = call.value as Value;
    call.value = null;
    if (v.key !== 'name' || !v.string) return;
    call.name = JSON.parse(v.raw) as string;
    this.flush(call, out);
  }

  /** Sends the call's opening delta once its name is known, then any arguments text not yet sent. */
  private flush(call: CallScan, out: ToolEvent[]): void {
    if (call.name === undefined) return;
    if (call.index === undefined) {
      call.index = this.opened++;
      out.push(...callEvents(call.index, this.newId(), call.name, call.args));
    } else if (call.args !== '') {
      out.push({ call: { index: call.index, function: { arguments: call.args } } });
    }
    call.args = '';
  }

  private endCall(call: CallScan, out: ToolEvent[]): void {
    this.flush(call, out);
    this.call = null;
  }
}

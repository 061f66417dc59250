/**
 * `tool_choice: "auto"`: Hermes tool calls in free text (vLLM's `hermes` parser). Text outside
 * `<tool_call>...</tool_call>` is content; a block holding `{"name": <an offered tool>, "arguments": {...}}`
 * is a call (a block left open when the output ends counts too, as in vLLM). A block that is not valid JSON,
 * names a tool that was not offered, or has arguments that are not an object stays content, tags included.
 *
 * Streaming: content is passed on as it arrives except a tail that may be the start of `<tool_call>` and trailing
 * whitespace (held until more content follows; whitespace next to a call is dropped, and so is the whitespace
 * left at the end of an output that made calls, so a stream reassembles to the non-streamed message); a block is
 * held until it closes, then sent as one call (its opening delta and its arguments).
 */
import { isObject } from './body-fields';
import { deeperThan, MAX_JSON_DEPTH } from './json-depth';
import { callEvents, type ToolCallParser, type ToolEvent } from './tool-events';

export const CALL_OPEN = '<tool_call>';
export const CALL_CLOSE = '</tool_call>';

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/** The call in a block's text, or undefined when it is not one. */
export function parseHermesCall(block: string, names: ReadonlySet<string>): { name: string; arguments: string } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(block.trim());
  } catch {
    return undefined;
  }
  return callOf(value, names);
}

/**
 * A parsed JSON value as a call: `{"name": <an offered tool>, "arguments" (or "parameters", Llama 3.1's key):
 * <object, or JSON text of one>}`; undefined when it is not one. Arguments come back as compact JSON text.
 */
export function callOf(value: unknown, names: ReadonlySet<string>): { name: string; arguments: string } | undefined {
  if (!isObject(value) || typeof value['name'] !== 'string' || !names.has(value['name'])) return undefined;
  let args = value['arguments'] ?? value['parameters'] ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args);
    } catch {
      return undefined;
    }
  }
  if (!isObject(args) || deeperThan(args, MAX_JSON_DEPTH)) return undefined;
  return { name: value['name'], arguments: JSON.stringify(args) };
}

export class HermesCallParser implements ToolCallParser {
  /** Text outside a block not yet passed on: a tail that may be the start of `<tool_call>`. */
  private pending = '';
  /** Text of the open block after `<tool_call>`, as pushed; null outside a block. */
  private block: string[] | null = null;
  /** The open block's last CALL_CLOSE.length - 1 characters: a close tag may start there. */
  private tail = '';
  /** Trailing whitespace of the content so far: passed on when more content follows, dropped next to a call. */
  private space = '';
  private opened = 0;

  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly newId: () => string,
  ) {}

  get calls(): number {
    return this.opened;
  }

  /** A block left open still counts as a call (its JSON parsed when the output ends). */
  get truncated(): boolean {
    return false;
  }

  push(text: string): ToolEvent[] {
    const out: ToolEvent[] = [];
    let input = text;
    while (input !== '') {
      if (this.block === null) {
        this.pending += input;
        const at = this.pending.indexOf(CALL_OPEN);
        if (at < 0) {
          const keep = partialTag(this.pending, CALL_OPEN);
          this.content(out, this.pending.slice(0, this.pending.length - keep));
          this.pending = this.pending.slice(this.pending.length - keep);
          return out;
        }
        this.content(out, this.pending.slice(0, at));
        input = this.pending.slice(at + CALL_OPEN.length);
        this.pending = '';
        this.block = [];
        this.tail = '';
        continue;
      }
      // Only the new text and the tail before it are searched: each character is scanned a bounded number of times.
      const window = this.tail + input;
      const end = window.indexOf(CALL_CLOSE);
      if (end < 0) {
        this.block.push(input);
        this.tail = window.slice(-(CALL_CLOSE.length - 1));
        return out;
      }
      const whole = this.block.join('') + input;
      const bodyEnd = whole.length - window.length + end;
      const body = whole.slice(0, bodyEnd);
      input = whole.slice(bodyEnd + CALL_CLOSE.length);
      this.block = null;
      this.emitBlock(out, body, CALL_OPEN + body + CALL_CLOSE);
    }
    return out;
  }

  finish(): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.block !== null) {
      const body = this.block.join('');
      this.emitBlock(out, body, CALL_OPEN + body);
    } else this.content(out, this.pending);
    if (this.opened === 0 && this.space !== '') out.push({ content: this.space });
    this.block = null;
    this.pending = '';
    this.space = '';
    return out;
  }

  private content(out: ToolEvent[], text: string): void {
    const kept = text.trimEnd();
    if (kept === '') {
      this.space += text; // held: scanning only the new text keeps a long whitespace run linear
      return;
    }
    out.push({ content: this.space + kept });
    this.space = text.slice(kept.length);
  }

  private emitBlock(out: ToolEvent[], body: string, raw: string): void {
    const call = parseHermesCall(body, this.names);
    if (call === undefined) {
      this.content(out, raw);
      return;
    }
    this.space = '';
    out.push(...callEvents(this.opened++, this.newId(), call.name, call.arguments));
  }
}

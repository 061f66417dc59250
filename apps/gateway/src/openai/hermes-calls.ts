/**
 * `tool_choice: "auto"`: Hermes tool calls in free text (vLLM's `hermes` parser). Text outside
 * `<tool_call>...</tool_call>` is content; a block holding `{"name": <an offered tool>, "arguments": {...}}`
 * is a call (a block left open when the output ends counts too, as in vLLM). A block that is not valid JSON,
 * names a tool that was not offered, or has arguments that are not an object stays content, tags included.
 *
 * Streaming: content is passed on as it arrives except a tail that may be the start of `<tool_call>`; a block is
 * held until it closes, then sent as one call (its opening delta and its arguments).
 */
import { callEvents, type ToolCallParser, type ToolEvent } from './tool-events';

export const CALL_OPEN = '<tool_call>';
export const CALL_CLOSE = '</tool_call>';

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The call in a block's text, or undefined when it is not one. */
export function parseHermesCall(block: string, names: ReadonlySet<string>): { name: string; arguments: string } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(block.trim());
  } catch {
    return undefined;
  }
  if (!isObject(value) || typeof value['name'] !== 'string' || !names.has(value['name'])) return undefined;
  let args = value['arguments'] ?? value['parameters'] ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args);
    } catch {
      return undefined;
    }
  }
  if (!isObject(args)) return undefined;
  return { name: value['name'], arguments: JSON.stringify(args) };
}

export class HermesCallParser implements ToolCallParser {
  private pending = '';
  /** Text of the open block after `<tool_call>`; null outside a block. */
  private block: string | null = null;
  private opened = 0;

  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly newId: () => string,
  ) {}

  get calls(): number {
    return this.opened;
  }

  push(text: string): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.block === null) this.pending += text;
    else this.block += text;
    for (;;) {
      if (this.block === null) {
        const at = this.pending.indexOf(CALL_OPEN);
        if (at < 0) {
          const keep = partialTag(this.pending, CALL_OPEN);
          this.content(out, this.pending.slice(0, this.pending.length - keep));
          this.pending = this.pending.slice(this.pending.length - keep);
          return out;
        }
        this.content(out, this.pending.slice(0, at));
        this.block = this.pending.slice(at + CALL_OPEN.length);
        this.pending = '';
      } else {
        const end = this.block.indexOf(CALL_CLOSE);
        if (end < 0) return out;
        const body = this.block.slice(0, end);
        this.pending = this.block.slice(end + CALL_CLOSE.length);
        this.block = null;
        this.emitBlock(out, body, CALL_OPEN + body + CALL_CLOSE);
      }
    }
  }

  finish(): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.block !== null) this.emitBlock(out, this.block, CALL_OPEN + this.block);
    else this.content(out, this.pending);
    this.block = null;
    this.pending = '';
    return out;
  }

  private content(out: ToolEvent[], text: string): void {
    if (text !== '') out.push({ content: text });
  }

  private emitBlock(out: ToolEvent[], body: string, raw: string): void {
    const call = parseHermesCall(body, this.names);
    if (call === undefined) {
      this.content(out, raw);
      return;
    }
    out.push(...callEvents(this.opened++, this.newId(), call.name, call.arguments));
  }
}

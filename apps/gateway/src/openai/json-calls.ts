/**
 * `tool_choice: "auto"` for the formats whose calls are bare JSON (pure), used when the model's own chat template
 * renders the tools (tool-format.ts):
 *
 * - `llama3_json` (vLLM's parser of that name; Llama 3.1+): `{"name": <tool>, "parameters": {...}}` objects
 *   (`arguments` is accepted too), several separated by `;`, optionally after `<|python_tag|>`;
 * - `mistral` (vLLM's `mistral`): `[TOOL_CALLS]` then a JSON list of `{"name", "arguments"}` objects.
 *
 * The worker decodes without special tokens, so `<|python_tag|>` / `[TOOL_CALLS]` are usually absent from the
 * text: calls are read where the output starts (after whitespace) with a JSON object or list, after the tag
 * wherever it appears as text, and (llama3_json) after a call and its `;`. The JSON value is held until it
 * closes; then it is a call (an object) or calls (a list, every item a call), each naming an offered tool with
 * object arguments, or else the text it came from (tag included) is content and the rest of the output is read
 * as content (calls then only after a tag). A value still open when the output ends is content. Whitespace
 * (and `;`) next to calls is dropped, as the Hermes parser does; so a stream reassembles to the whole message.
 */
import { deeperThan, MAX_JSON_DEPTH } from './json-depth';
import { JsonScan } from './json-scan';
import { callOf } from './hermes-calls';
import { callEvents, type ToolCallParser, type ToolEvent } from './tool-events';

export interface JsonCallsFormat {
  /** The marker a model writes before its calls (a special token, so usually decoded away). */
  readonly tag: string;
  /** Several calls may follow each other separated by `;` (llama3_json). */
  readonly semicolons: boolean;
}

export const LLAMA3_JSON: JsonCallsFormat = { tag: '<|python_tag|>', semicolons: true };
export const MISTRAL: JsonCallsFormat = { tag: '[TOOL_CALLS]', semicolons: false };

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/** The calls of one whole JSON value, or undefined when it is not (only) calls of offered tools. */
export function jsonCalls(text: string, names: ReadonlySet<string>): { name: string; arguments: string }[] | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (deeperThan(value, MAX_JSON_DEPTH + 2)) return undefined;
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) return undefined;
  const calls = items.map((v) => callOf(v, names));
  return calls.every((c) => c !== undefined) ? (calls as { name: string; arguments: string }[]) : undefined;
}

type Mode = 'lead' | 'content' | 'json';

export class JsonCallParser implements ToolCallParser {
  /**
   * `lead`: where calls may start (the output's start, after a tag, after a call): whitespace, the tag and
   * (after a call) `;` are held in `lead` until a JSON value or other text shows up. `content`: text passed on
   * but a tail that may be the start of the tag. `json`: inside a value.
   */
  private mode: Mode = 'lead';
  private lead = '';
  /** In `lead` mode: a tail that may be the start of the tag. */
  private held = '';
  private pending = '';
  private raw = '';
  private readonly scan = new JsonScan();
  /** Trailing whitespace of the content so far: passed on when more content follows, dropped next to a call. */
  private space = '';
  private opened = 0;

  constructor(
    private readonly format: JsonCallsFormat,
    private readonly names: ReadonlySet<string>,
    private readonly newId: () => string,
  ) {}

  get calls(): number {
    return this.opened;
  }

  /** A value left open is content, not a call: nothing is ever cut short. */
  get truncated(): boolean {
    return false;
  }

  push(text: string): ToolEvent[] {
    const out: ToolEvent[] = [];
    let input = text;
    while (input !== '') {
      if (this.mode === 'lead') input = this.leading(input, out);
      else if (this.mode === 'content') input = this.contentText(input, out);
      else input = this.json(input, out);
    }
    return out;
  }

  finish(): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.mode === 'json') this.content(out, this.takeLead() + this.raw);
    else if (this.mode === 'content') this.content(out, this.pending);
    else if (this.opened === 0) this.content(out, this.lead + this.held);
    if (this.opened === 0 && this.space !== '') out.push({ content: this.space });
    this.mode = 'lead';
    this.lead = this.held = this.pending = this.raw = this.space = '';
    return out;
  }

  /** Where calls may start: hold whitespace / the tag / `;`, then a JSON value or content. */
  private leading(input: string, out: ToolEvent[]): string {
    const tag = this.format.tag;
    const buf = this.held + input;
    this.held = '';
    let i = 0;
    for (;;) {
      while (i < buf.length && (/\s/.test(buf[i] as string) || (this.format.semicolons && this.opened > 0 && buf[i] === ';'))) i++;
      if (!buf.startsWith(tag, i)) break;
      i += tag.length;
    }
    this.lead += buf.slice(0, i);
    const rest = buf.slice(i);
    if (rest === '' || tag.startsWith(rest)) {
      this.held = rest; // a tag may be arriving
      return '';
    }
    const c = rest[0];
    if (c === '{' || c === '[') {
      this.mode = 'json';
      this.raw = '';
      this.scan.reset();
      return rest;
    }
    this.mode = 'content';
    const lead = this.takeLead();
    if (lead !== '') this.content(out, lead);
    return rest;
  }

  /** What `lead` held, as content: without the whitespace and `;` after a call. */
  private takeLead(): string {
    const lead = this.opened > 0 ? this.lead.replace(/^[\s;]+/, '') : this.lead;
    this.lead = '';
    return lead;
  }

  private contentText(input: string, out: ToolEvent[]): string {
    const tag = this.format.tag;
    this.pending += input;
    const at = this.pending.indexOf(tag);
    if (at < 0) {
      const keep = partialTag(this.pending, tag);
      this.content(out, this.pending.slice(0, this.pending.length - keep));
      this.pending = this.pending.slice(this.pending.length - keep);
      return '';
    }
    this.content(out, this.pending.slice(0, at));
    const rest = this.pending.slice(at + tag.length);
    this.pending = '';
    this.mode = 'lead';
    this.lead = tag;
    return rest;
  }

  private json(input: string, out: ToolEvent[]): string {
    let i = 0;
    for (; i < input.length; i++) {
      const c = input[i];
      const wasInString = this.scan.inString;
      this.scan.step(c);
      if (!wasInString && (c === '}' || c === ']') && this.scan.depth === 0) break;
    }
    if (i === input.length) {
      this.raw += input;
      return '';
    }
    this.raw += input.slice(0, i + 1);
    const calls = jsonCalls(this.raw, this.names);
    if (calls === undefined) {
      this.mode = 'content';
      this.content(out, this.takeLead() + this.raw);
    } else {
      this.mode = 'lead';
      this.space = '';
      for (const call of calls) out.push(...callEvents(this.opened++, this.newId(), call.name, call.arguments));
    }
    this.lead = this.raw = '';
    return input.slice(i + 1);
  }

  private content(out: ToolEvent[], text: string): void {
    const kept = text.trimEnd();
    if (kept === '') {
      this.space += text;
      return;
    }
    out.push({ content: this.space + kept });
    this.space = text.slice(kept.length);
  }
}

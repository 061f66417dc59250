/**
 * `tool_choice: "auto"` for the formats whose calls stand where the output starts (pure), used when the model's own
 * chat template renders the tools (tool-format.ts):
 *
 * - `llama3_json` (vLLM's parser of that name; Llama 3.1+): `{"name": <tool>, "parameters": {...}}` objects
 *   (`arguments` is accepted too), several separated by `;`, optionally after `<|python_tag|>`;
 * - `mistral` (vLLM's `mistral`): `[TOOL_CALLS]` then a JSON list of `{"name", "arguments"}` objects, or (newer
 *   templates) `[TOOL_CALLS]name[ARGS]{...}`, possibly repeated (mistral-calls.ts);
 * - `pythonic` (vLLM's `pythonic`; Llama 3.2 / 4 pythonic templates): a Python list of calls with literal keyword
 *   arguments, `[get_weather(city="Paris"), get_time()]` (pythonic-calls.ts).
 *
 * The worker decodes without special tokens, except that `auto` requests in the mistral and pythonic formats keep
 * those formats' markers (`[TOOL_CALLS]`, `[ARGS]`, `[CALL_ID]`, `<|python_start|>`, `<|python_end|>`,
 * `<|python_tag|>`: SamplingParams.keepToolMarkers, tool-schema.ts); llama3_json's `<|python_tag|>` is dropped.
 * Calls are read where the output starts (after whitespace), after a tag wherever it appears as text (so after prose
 * where the markers are kept), and after a call (and, llama3_json, its `;`). The format's reader
 * (CallReader) takes the value from its first character and holds it until it ends; then it is one or more calls,
 * each naming an offered tool with object arguments, or else the text it came from (tag included) is content and the
 * rest of the output is read as content (calls then only after a tag). A value still open when the output ends is
 * content. Whitespace (and `;`) next to calls is dropped, as the Hermes parser does; so a stream reassembles to the
 * whole message.
 */
import { JsonValueReader, type CallReader } from './call-reader';
import { mistralReader } from './mistral-calls';
import { pythonicReader } from './pythonic-calls';
import { callEvents, type ToolCallParser, type ToolEvent } from './tool-events';

export { jsonCalls, type Call, type CallReader } from './call-reader';

export interface JsonCallsFormat {
  /** Markers a model writes before its calls (special tokens, so usually decoded away), searched for in content. */
  readonly tags: readonly string[];
  /** Markers a model writes after its calls, skipped there. */
  readonly closers?: readonly string[];
  /** Several calls may follow each other separated by `;` (llama3_json). */
  readonly semicolons: boolean;
  /** The reader of a value whose first character is `c`; undefined when no call starts with it. */
  reader(c: string, names: ReadonlySet<string>): CallReader | undefined;
}

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

function jsonReader(c: string, names: ReadonlySet<string>): CallReader | undefined {
  return c === '{' || c === '[' ? new JsonValueReader(names) : undefined;
}

export const LLAMA3_JSON: JsonCallsFormat = { tags: ['<|python_tag|>'], semicolons: true, reader: jsonReader };
export const MISTRAL: JsonCallsFormat = { tags: ['[TOOL_CALLS]'], semicolons: false, reader: (c, names) => jsonReader(c, names) ?? mistralReader(c, names) };
/** Llama 4 writes `<|python_start|>` / `<|python_end|>` around the list (vLLM's llama4_pythonic strips them). */
export const PYTHONIC: JsonCallsFormat = { tags: ['<|python_start|>', '<|python_tag|>'], closers: ['<|python_end|>'], semicolons: false, reader: pythonicReader };

type Mode = 'lead' | 'content' | 'value';

/** Where the earliest of `tags` starts in `text` and which, or undefined. */
function firstTag(text: string, tags: readonly string[]): { at: number; tag: string } | undefined {
  let found: { at: number; tag: string } | undefined;
  for (const tag of tags) {
    const at = text.indexOf(tag);
    if (at >= 0 && (found === undefined || at < found.at)) found = { at, tag };
  }
  return found;
}

export class JsonCallParser implements ToolCallParser {
  /**
   * `lead`: where calls may start (the output's start, after a tag, after a call): whitespace, the tags and
   * (after a call) the closers and `;` are held in `lead` until a value or other text shows up. `content`: text
   * passed on but a tail that may be the start of a tag. `value`: inside a value (the reader's).
   */
  private mode: Mode = 'lead';
  private lead = '';
  /** In `lead` mode: a tail that may be the start of a tag. */
  private held = '';
  private pending = '';
  private raw = '';
  private reader: CallReader | null = null;
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
      else input = this.value(input, out);
    }
    return out;
  }

  finish(): ToolEvent[] {
    const out: ToolEvent[] = [];
    if (this.mode === 'value') this.content(out, this.takeLead() + this.raw);
    else if (this.mode === 'content') this.content(out, this.pending);
    else if (this.opened === 0) this.content(out, this.lead + this.held);
    if (this.opened === 0 && this.space !== '') out.push({ content: this.space });
    this.mode = 'lead';
    this.lead = this.held = this.pending = this.raw = this.space = '';
    this.reader = null;
    return out;
  }

  /** Where calls may start: hold whitespace / the tags / `;`, then a value or content. */
  private leading(input: string, out: ToolEvent[]): string {
    const after = this.opened > 0;
    const skipped = after ? [...this.format.tags, ...(this.format.closers ?? [])] : this.format.tags;
    const buf = this.held + input;
    this.held = '';
    let i = 0;
    for (;;) {
      while (i < buf.length && (/\s/.test(buf[i] as string) || (this.format.semicolons && after && buf[i] === ';'))) i++;
      const tag = skipped.find((t) => buf.startsWith(t, i));
      if (tag === undefined) break;
      i += tag.length;
    }
    this.lead += buf.slice(0, i);
    const rest = buf.slice(i);
    if (rest === '' || skipped.some((t) => t.startsWith(rest))) {
      this.held = rest; // a tag may be arriving
      return '';
    }
    const reader = this.format.reader(rest[0] as string, this.names);
    if (reader !== undefined) {
      this.mode = 'value';
      this.raw = '';
      this.reader = reader;
      return rest;
    }
    this.mode = 'content';
    const lead = this.takeLead();
    if (lead !== '') this.content(out, lead);
    return rest;
  }

  /** What `lead` held, as content: without the whitespace, closers and `;` after a call. */
  private takeLead(): string {
    let lead = this.lead;
    if (this.opened > 0) {
      const closers = this.format.closers ?? [];
      for (let again = true; again; ) {
        const trimmed = lead.replace(/^[\s;]+/, '');
        const closer = closers.find((t) => trimmed.startsWith(t));
        again = closer !== undefined;
        lead = closer === undefined ? trimmed : trimmed.slice(closer.length);
      }
    }
    this.lead = '';
    return lead;
  }

  private contentText(input: string, out: ToolEvent[]): string {
    this.pending += input;
    const found = firstTag(this.pending, this.format.tags);
    if (found === undefined) {
      const keep = Math.max(...this.format.tags.map((t) => partialTag(this.pending, t)));
      this.content(out, this.pending.slice(0, this.pending.length - keep));
      this.pending = this.pending.slice(this.pending.length - keep);
      return '';
    }
    this.content(out, this.pending.slice(0, found.at));
    const rest = this.pending.slice(found.at + found.tag.length);
    this.pending = '';
    this.mode = 'lead';
    this.lead = found.tag;
    return rest;
  }

  private value(input: string, out: ToolEvent[]): string {
    const reader = this.reader as CallReader;
    const end = reader.feed(input);
    if (end === undefined) {
      this.raw += input;
      return '';
    }
    const all = this.raw + input;
    const value = all.slice(0, end);
    const calls = reader.calls(value);
    this.reader = null;
    if (calls === undefined) {
      this.mode = 'content';
      this.content(out, this.takeLead() + value);
    } else {
      this.mode = 'lead';
      this.space = '';
      for (const call of calls) out.push(...callEvents(this.opened++, this.newId(), call.name, call.arguments));
    }
    this.lead = this.raw = '';
    return all.slice(end);
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

/**
 * Mistral's newer call syntax (pure), read by the `mistral` parser (json-calls.ts) next to its older JSON list:
 * templates of tokenizer v11+ (Mistral Small 3.1+, Devstral, Magistral) render a past call as
 * `[TOOL_CALLS]name[ARGS]{...}`, one such group per call, some as `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`
 * (vLLM's `mistral` parser reads both). The markers are special tokens, which the worker decodes away: the text is
 * then `name{...}`, or `nameID{...}` with the id's 9 letters and digits glued to the name. Either way the id is
 * dropped (calls get the gateway's ids, as every format's do).
 *
 * A value starts with a character of a tool name and is held while its text can still be an offered tool's name
 * (that name plus a glued id); anything else ends it at once as content, so prose passes on without waiting. The
 * arguments are a JSON object, held until it closes.
 */
import { callOf } from './hermes-calls';
import type { Call, CallReader } from './call-reader';
import { JsonScan } from './json-scan';

export const ARGS_MARKER = '[ARGS]';
export const CALL_ID_MARKER = '[CALL_ID]';
const NAME_CHAR = /[A-Za-z0-9_-]/;
const ID_CHAR = /[A-Za-z0-9]/;
/** Mistral's call ids: 9 letters and digits (tool_template.py's mistral_id). */
const ID_LENGTH = 9;
/** Longest id accepted after a `[CALL_ID]` written as text. */
const MAX_ID = 64;

/** Whether `text` may still grow into an offered name, or is one with (part of) a glued id after it. */
function couldBeName(text: string, names: ReadonlySet<string>): boolean {
  for (const name of names) {
    if (name.startsWith(text)) return true;
    if (text.startsWith(name) && text.length - name.length <= ID_LENGTH && [...text.slice(name.length)].every((c) => ID_CHAR.test(c))) return true;
  }
  return false;
}

/** The offered tool `text` names: itself, or the name before a glued id. */
function toolName(text: string, names: ReadonlySet<string>, idWritten: boolean): string | undefined {
  if (names.has(text)) return text;
  if (idWritten || text.length <= ID_LENGTH) return undefined;
  const base = text.slice(0, -ID_LENGTH);
  return names.has(base) && [...text.slice(-ID_LENGTH)].every((c) => ID_CHAR.test(c)) ? base : undefined;
}

type Part = 'name' | 'marker' | 'id' | 'open' | 'args';

export class NamedCallReader implements CallReader {
  private part: Part = 'name';
  private name = '';
  private id: string | null = null;
  private marker = '';
  private markerAt = 0;
  private argsAt = 0;
  private length = 0;
  private readonly scan = new JsonScan();

  constructor(private readonly names: ReadonlySet<string>) {}

  feed(text: string): number | undefined {
    for (let i = 0; i < text.length; i++) {
      const end = this.step(text[i] as string, this.length + i);
      if (end !== undefined) return end;
    }
    this.length += text.length;
    return undefined;
  }

  calls(value: string): Call[] | undefined {
    if (this.part !== 'args' || this.scan.depth !== 0) return undefined;
    const name = toolName(this.name, this.names, this.id !== null);
    if (name === undefined) return undefined;
    let args: unknown;
    try {
      args = JSON.parse(value.slice(this.argsAt));
    } catch {
      return undefined;
    }
    const call = callOf({ name, arguments: args }, this.names); // an object (it starts with `{`) of offered depth
    return call === undefined ? undefined : [call];
  }

  /** One character at `at` (from the value's start); the value's length when it ends there. */
  private step(c: string, at: number): number | undefined {
    switch (this.part) {
      case 'name':
        if (NAME_CHAR.test(c)) {
          this.name += c;
          return couldBeName(this.name, this.names) ? undefined : at;
        }
        return this.afterName(c, at);
      case 'id':
        if (ID_CHAR.test(c)) {
          this.id += c;
          return (this.id as string).length > MAX_ID ? at : undefined;
        }
        return this.afterName(c, at);
      case 'marker':
        return this.markerStep(c);
      case 'open':
        if (/\s/.test(c)) return undefined;
        return this.openArgs(c, at);
      case 'args': {
        const wasInString = this.scan.inString;
        this.scan.step(c);
        return !wasInString && (c === '}' || c === ']') && this.scan.depth === 0 ? at + 1 : undefined;
      }
    }
  }

  private afterName(c: string, at: number): number | undefined {
    if (c === '[') {
      this.part = 'marker';
      this.marker = c;
      this.markerAt = at;
      return undefined;
    }
    return this.openArgs(c, at);
  }

  private markerStep(c: string): number | undefined {
    this.marker += c;
    if (this.marker === ARGS_MARKER) this.part = 'open';
    else if (this.marker === CALL_ID_MARKER && this.id === null) {
      this.part = 'id';
      this.id = '';
    } else if (!ARGS_MARKER.startsWith(this.marker) && !(this.id === null && CALL_ID_MARKER.startsWith(this.marker))) return this.markerAt;
    return undefined;
  }

  private openArgs(c: string, at: number): number | undefined {
    if (c !== '{' || this.name === '') return at;
    this.part = 'args';
    this.argsAt = at;
    this.scan.step(c);
    return undefined;
  }
}

/** The reader of a value starting with `c`, when a tool name can start with it. */
export function mistralReader(c: string, names: ReadonlySet<string>): CallReader | undefined {
  return NAME_CHAR.test(c) && couldBeName(c, names) ? new NamedCallReader(names) : undefined;
}

/**
 * A call written where the output starts, read as it streams (pure): the reader of one value, for the parsers of
 * json-calls.ts, and the JSON value reader (llama3_json, Mistral's call list).
 */
import { deeperThan, MAX_JSON_DEPTH } from './json-depth';
import { JsonScan } from './json-scan';
import { callOf } from './hermes-calls';

export interface Call {
  readonly name: string;
  /** Compact JSON text of an object. */
  readonly arguments: string;
}

/** One value at a call start, fed as it streams. */
export interface CallReader {
  /**
   * Takes the next text; returns the length of the whole value (counted from its first character, over every
   * feed) once it has ended, possibly before the end of this text, or undefined while it is still open. A reader
   * may end early on text that cannot continue a call: its value is then content.
   */
  feed(text: string): number | undefined;
  /** The calls of the ended value, or undefined when it is not (only) calls of offered tools. */
  calls(value: string): Call[] | undefined;
}

/** The calls of one whole JSON value, or undefined when it is not (only) calls of offered tools. */
export function jsonCalls(text: string, names: ReadonlySet<string>): Call[] | undefined {
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
  return calls.every((c) => c !== undefined) ? (calls as Call[]) : undefined;
}

/** A JSON object or list, ended by its closing bracket. */
export class JsonValueReader implements CallReader {
  private readonly scan = new JsonScan();
  private length = 0;

  constructor(private readonly names: ReadonlySet<string>) {}

  feed(text: string): number | undefined {
    for (let i = 0; i < text.length; i++) {
      const c = text[i] as string;
      const wasInString = this.scan.inString;
      this.scan.step(c);
      if (!wasInString && (c === '}' || c === ']') && this.scan.depth === 0) return this.length + i + 1;
    }
    this.length += text.length;
    return undefined;
  }

  calls(value: string): Call[] | undefined {
    return jsonCalls(value, this.names);
  }
}

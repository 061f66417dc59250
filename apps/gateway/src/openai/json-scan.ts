/**
 * Where a stream of JSON text stands, one character at a time: the nesting depth of objects and arrays and whether
 * it is inside a string (escapes honoured). Shared by the streaming tool-call parsers (json-calls.ts, guided-calls.ts).
 */
export class JsonScan {
  depth = 0;
  inString = false;
  private escaped = false;

  /** Advances over one character. */
  step(c: string): void {
    if (this.inString) {
      if (this.escaped) this.escaped = false;
      else if (c === '\\') this.escaped = true;
      else if (c === '"') this.inString = false;
    } else if (c === '"') this.inString = true;
    else if (c === '{' || c === '[') this.depth++;
    else if (c === '}' || c === ']') this.depth--;
  }

  reset(): void {
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
  }
}

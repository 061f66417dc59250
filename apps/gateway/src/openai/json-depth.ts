/**
 * The nesting depth of a client's JSON (pure). JSON.parse takes any depth, but JSON.stringify and every
 * recursive walk (tool-prompt.ts pyJson, json-schema-check.ts) overflow V8's stack at a few thousand levels
 * (~10 KB of `[[[...]]]`): a RangeError, an HTTP 500. Entry points check values with deeperThan first and
 * refuse deeper ones as 400 naming the field (checkDepth).
 */
import { InlaidError } from '../common/inlaid-error';

/**
 * Levels of arrays / objects a request's JSON value may nest. A schema within json-schema-check's 64 schema
 * levels nests at most ~130 (a schema and its `properties` map are two).
 */
export const MAX_JSON_DEPTH = 256;

/** Whether `value` nests arrays / objects more than `limit` levels (a scalar is 0, `[]` is 1). Iterative. */
export function deeperThan(value: unknown, limit: number): boolean {
  const values: unknown[] = [value];
  const depths: number[] = [0];
  while (values.length > 0) {
    const v = values.pop();
    const depth = (depths.pop() as number) + 1;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child !== 'object' || child === null) continue;
      values.push(child);
      depths.push(depth);
    }
  }
  return false;
}

/** Refuses `value` (400 / INVALID_ARGUMENT naming `param`) when it nests more than `limit` levels; `shown` is the
 * limit the message states (a value holding a checked field may be allowed that field's levels plus its own). */
export function checkDepth(value: unknown, param: string, limit = MAX_JSON_DEPTH, shown = limit): void {
  if (deeperThan(value, limit)) throw InlaidError.invalid(`'${param}' nests deeper than ${shown} levels.`, param);
}

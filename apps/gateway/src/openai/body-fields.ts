/**
 * Reading the fields of a parsed JSON request body (pure): presence, objects, bounded numbers and booleans.
 * Every rejection is an InlaidError(INVALID_ARGUMENT) naming the field.
 */
import { InlaidError } from '../common/inlaid-error';

/** Set: neither undefined nor JSON null. */
export function isPresent(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** A JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `body[name]` when present: a finite number (an integer if asked) in [min, max]. */
export function optNumber(body: Record<string, unknown>, name: string, min: number, max: number, integer = false): number | undefined {
  const v = body[name];
  if (!isPresent(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw InlaidError.invalid(`'${name}' must be ${integer ? 'an integer' : 'a number'}.`, name);
  }
  if (v < min || v > max) throw InlaidError.invalid(`'${name}' must be between ${min} and ${max}, got ${v}.`, name);
  return v;
}

/** `body[name]` when present: a boolean. */
export function optBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (!isPresent(v)) return undefined;
  if (typeof v !== 'boolean') throw InlaidError.invalid(`'${name}' must be a boolean.`, name);
  return v;
}

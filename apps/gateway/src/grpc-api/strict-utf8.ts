/**
 * Protobuf string fields hold valid UTF-8, but the generated decoders (ts-proto on @bufbuild/protobuf's BinaryReader)
 * put U+FFFD in place of invalid bytes and serve the request as if it were valid. A client request is decoded through
 * a reader whose UTF-8 decoding is strict instead, in the same single pass: ASCII strings take the reader's own fast
 * path, every other string is decoded once by a fatal TextDecoder. A string that fails decodes to a marker unique to
 * the call, which the decoded message is then searched for, so the field holding it can be named.
 */
import { randomUUID } from 'node:crypto';
import { BinaryReader } from '@bufbuild/protobuf/wire';

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A string field of the request held bytes that are not UTF-8; `field` is its proto path (e.g. `messages[1].content`),
 * undefined when no field of the decoded message holds them (a later occurrence of the field replaced them).
 */
export class InvalidUtf8 extends Error {
  constructor(readonly field: string | undefined) {
    super(field === undefined ? 'A string field must be valid UTF-8.' : `${field} must be valid UTF-8.`);
  }
}

const snake = (key: string): string => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const join = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);
const isOneof = (v: unknown): v is { $case: string; value: unknown } => typeof v === 'object' && v !== null && typeof (v as { $case?: unknown }).$case === 'string';

/**
 * The proto path of the first string field equal to `bad` in a decoded ts-proto message (camelCase keys back to the
 * proto's snake_case; a oneof by the name of its set field), or undefined.
 */
export function fieldHolding(value: unknown, bad: string, path = ''): string | undefined {
  if (value === bad) return path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = fieldHolding(value[i], bad, `${path}[${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return undefined;
  for (const [key, v] of Object.entries(value)) {
    const found = isOneof(v) ? fieldHolding(v.value, bad, join(path, snake(v.$case))) : fieldHolding(v, bad, join(path, snake(key)));
    if (found !== undefined) return found;
  }
  return undefined;
}

/**
 * `deserialize` (a ts-proto service method's requestDeserialize: `(b) => Message.decode(b)`, and `decode` reads from a
 * BinaryReader it is given) run on a strict reader over `bytes`. Throws InvalidUtf8 naming the first field whose bytes
 * are not UTF-8; whatever else `deserialize` throws (a malformed message) passes through.
 */
export function decodeStrictUtf8<T>(deserialize: (bytes: Buffer) => T, bytes: Buffer): T {
  let marker: string | undefined; // no client's text: it holds a fresh uuid (and a NUL)
  const decodeUtf8 = (b: Uint8Array): string => {
    try {
      return strict.decode(b);
    } catch {
      marker ??= `\0invalid-utf8:${randomUUID()}`;
      return marker;
    }
  };
  const message = deserialize(new BinaryReader(bytes, decodeUtf8) as unknown as Buffer);
  if (marker !== undefined) throw new InvalidUtf8(fieldHolding(message, marker));
  return message;
}

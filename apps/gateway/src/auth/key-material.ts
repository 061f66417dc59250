/**
 * API key material (pure): a key is `sk-inlaid-` + 32 random bytes (base64url); only its sha256 hex digest
 * and a short display prefix are stored. 256 bits of entropy make a salt or a slow hash unnecessary.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const KEY_PREFIX = 'sk-inlaid-';
const DISPLAY_CHARS = KEY_PREFIX.length + 6;
const MAX_KEY_LENGTH = 256;

export interface NewKey {
  readonly key: string;
  readonly hash: string;
  readonly prefix: string;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function displayPrefix(key: string): string {
  return key.slice(0, DISPLAY_CHARS);
}

export function generateApiKey(): NewKey {
  const key = KEY_PREFIX + randomBytes(32).toString('base64url');
  return { key, hash: hashApiKey(key), prefix: displayPrefix(key) };
}

/** Constant-time equality of two hex digests of the same algorithm. */
export function sameDigest(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'hex');
  const bb = Buffer.from(b, 'hex');
  return ab.length === bb.length && ab.length > 0 && timingSafeEqual(ab, bb);
}

/** The key in an `Authorization: Bearer <key>` header, or null when the header is missing or malformed. */
export function bearerKey(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header.trim());
  const key = match?.[1] ?? '';
  return key === '' || key.length > MAX_KEY_LENGTH ? null : key;
}

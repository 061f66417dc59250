/** Bearer API-key check shared by the HTTP guard and the gRPC server (pure, constant-time compare). */
import { timingSafeEqual } from 'node:crypto';
import { InlaidError } from '../common/inlaid-error';

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

/** Throws UNAUTHENTICATED unless keys is empty or the header is `Bearer <one of keys>`. */
export function checkBearer(header: string | undefined, keys: readonly string[]): void {
  if (keys.length === 0) return;
  if (header === undefined || header === '') {
    throw InlaidError.unauthenticated("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.");
  }
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  const key = match?.[1]?.trim() ?? '';
  if (!keys.some((k) => safeEqual(k, key))) throw InlaidError.unauthenticated('Incorrect API key provided.');
}

/**
 * grpc-js answers a request that fails to decode with INTERNAL; a malformed message is the client's fault,
 * so the service definition is wrapped to decode into a marker instead, which handlers refuse with
 * INVALID_ARGUMENT. Decoding is strict about UTF-8 (strict-utf8.ts): a string field holding other bytes is
 * refused naming that field, not served with U+FFFD in their place.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { decodeStrictUtf8, InvalidUtf8 } from './strict-utf8';

const MALFORMED = Symbol('malformed');
interface Malformed {
  readonly [MALFORMED]: string;
  readonly param?: string;
}

export function withMalformedMarker<S extends ServiceDefinition>(service: S): S {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decodeStrictUtf8(method.requestDeserialize, bytes);
        } catch (err) {
          if (err instanceof InvalidUtf8) return { [MALFORMED]: err.message, param: err.field } satisfies Malformed;
          return { [MALFORMED]: `The request message could not be decoded: ${err instanceof Error ? err.message : String(err)}` } satisfies Malformed;
        }
      },
    };
  }
  return wrapped as S;
}

/** Throws INVALID_ARGUMENT when the request could not be decoded. */
export function checkDecoded(request: unknown): void {
  if (typeof request === 'object' && request !== null && MALFORMED in request) {
    const m = request as Malformed;
    throw InlaidError.invalid(m[MALFORMED], m.param);
  }
}

/**
 * grpc-js answers a request that fails to decode with INTERNAL; a malformed message is the client's fault,
 * so the service definition is wrapped to decode into a marker instead, which handlers refuse with
 * INVALID_ARGUMENT.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';

const MALFORMED = Symbol('malformed');
interface Malformed {
  readonly [MALFORMED]: string;
}

export function withMalformedMarker<S extends ServiceDefinition>(service: S): S {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return { [MALFORMED]: err instanceof Error ? err.message : String(err) } satisfies Malformed;
        }
      },
    };
  }
  return wrapped as S;
}

/** Throws INVALID_ARGUMENT when the request could not be decoded. */
export function checkDecoded(request: unknown): void {
  if (typeof request === 'object' && request !== null && MALFORMED in request) {
    throw InlaidError.invalid(`The request message could not be decoded: ${(request as Malformed)[MALFORMED]}`);
  }
}

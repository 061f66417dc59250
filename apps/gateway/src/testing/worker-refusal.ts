/** A failed worker call as grpc-js hands it over, for tests: its status, text and (when given) the kind it names. */
import { Metadata, status } from '@grpc/grpc-js';
import { WORKER_ERROR_KIND_KEY } from '../common/inlaid-error';

/** `kind`: a RequestErrorKind name (e.g. `REQUEST_ERROR_KIND_BAD_INPUT`) in the trailing metadata; left out: none. */
export function workerRefusal(code: status, details: string, kind?: string): Error & { code: status; details: string; metadata: Metadata } {
  const metadata = new Metadata();
  if (kind !== undefined) metadata.set(WORKER_ERROR_KIND_KEY, kind);
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata });
}

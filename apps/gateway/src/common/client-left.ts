/** The error of work whose client left before it was done (CANCELLED: nobody is there to read it). */
import { status } from '@grpc/grpc-js';
import { InlaidError } from './inlaid-error';

/** `when`: at which step it left (e.g. `before the worker was asked`). */
export function clientLeft(when: string): InlaidError {
  return new InlaidError(status.CANCELLED, `the client went away ${when}`);
}

/** Spec helper (not part of the build): the `param` of the INVALID_ARGUMENT InlaidError that `fn` throws. */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';

/** The refused parameter's name ('<none>' when the error names none); throws when fn does not throw such an error. */
export function paramOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof InlaidError) || err.status !== status.INVALID_ARGUMENT) throw err;
    return err.details.param ?? '<none>';
  }
  throw new Error('expected an INVALID_ARGUMENT error');
}

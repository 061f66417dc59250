import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { checkBearer } from './api-keys';

describe('checkBearer', () => {
  it('allows everything when no keys are configured', () => {
    expect(() => checkBearer(undefined, [])).not.toThrow();
  });

  it('accepts any configured key, case-insensitive scheme', () => {
    expect(() => checkBearer('Bearer k2', ['k1', 'k2'])).not.toThrow();
    expect(() => checkBearer('bearer  k1 ', ['k1'])).not.toThrow();
  });

  it.each([undefined, '', 'k1', 'Bearer', 'Bearer k3', 'Basic k1'])('rejects %p with UNAUTHENTICATED', (header) => {
    try {
      checkBearer(header, ['k1', 'k2']);
      throw new Error('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(InlaidError);
      expect((err as InlaidError).status).toBe(status.UNAUTHENTICATED);
    }
  });
});

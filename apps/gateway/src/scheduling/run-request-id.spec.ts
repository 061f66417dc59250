/**
 * Worker-side run ids (resume.ts runRequestId) carry this gateway process's nonce: two gateways sharing a worker number
 * their runs each from 1, and before, one request id reused on both met as one run id on the worker (`job~r1` twice),
 * which the worker refused as already in flight (an INTERNAL error, a 500 to the client).
 */
import { GATEWAY_NONCE, runRequestId } from './resume';

/** The GATEWAY_NONCE of a freshly loaded resume.ts: another gateway process's. */
function anotherProcessNonce(): string {
  let nonce = '';
  jest.isolateModules(() => {
    nonce = (jest.requireActual('./resume') as typeof import('./resume')).GATEWAY_NONCE;
  });
  return nonce;
}

describe('runRequestId', () => {
  it('is `<id>~r<n>.<nonce>`: short, and its request still read back before the last `~`', () => {
    expect(GATEWAY_NONCE).toMatch(/^[0-9a-z]{6}$/);
    const run = runRequestId('tenant/job#1', 7);
    expect(run).toBe(`tenant/job#1~r7.${GATEWAY_NONCE}`);
    expect(run.slice(0, run.lastIndexOf('~'))).toBe('tenant/job#1');
  });

  it('differs between gateway processes for the same request id and run number', () => {
    const other = anotherProcessNonce();
    expect(other).toMatch(/^[0-9a-z]{6}$/);
    expect(other).not.toBe(GATEWAY_NONCE); // one in 2e9 to collide
    expect(runRequestId('job', 1, other)).not.toBe(runRequestId('job', 1)); // before: `job~r1` on both
  });
});

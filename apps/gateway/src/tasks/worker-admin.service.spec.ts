/**
 * toAdminError: an admin call's failure (ValidateAdapter, LoadAdapter, UnloadAdapter, Requantize) as the client sees it.
 * A worker's own refusals keep their texts (written for the admin); a failed transport is a 503 / 504 with a fixed
 * message, grpc-js's text (which names the worker's address) only logged; anything else a logged 500. Before, the
 * transport text went out as `Worker unavailable: …` and every other code passed grpc-js's text through.
 */
import { status } from '@grpc/grpc-js';
import { toOpenAIError } from '../common/http-mapping';
import { INTERNAL_ERROR_MESSAGE, WORKER_TIMEOUT_MESSAGE, WORKER_UNAVAILABLE_MESSAGE } from '../common/inlaid-error';
import { logSpies } from '../testing/log-spies';
import { workerRefusal } from '../testing/worker-refusal';
import { toAdminError } from './worker-admin.service';

const grpcError = (code: status, details: string) => workerRefusal(code, details);

describe('toAdminError', () => {
  const spies = logSpies();

  it("keeps the worker's refusals: a 400 naming the parameter, and the admin codes with their texts", () => {
    const bad = toAdminError(grpcError(status.INVALID_ARGUMENT, "adapter 'sql' refused: rank 512 is too large"), 'adapter');
    expect(toOpenAIError(bad)).toMatchObject({ httpStatus: 400, body: { error: { param: 'adapter', message: "adapter 'sql' refused: rank 512 is too large" } } });
    for (const code of [status.ALREADY_EXISTS, status.NOT_FOUND, status.FAILED_PRECONDITION, status.ABORTED, status.RESOURCE_EXHAUSTED]) {
      const err = toAdminError(grpcError(code, 'every adapter slot is in use'));
      expect([err.status, err.message]).toEqual([code, 'every adapter slot is in use']);
    }
    expect(spies.error).not.toHaveBeenCalled();
  });

  it("answers a failed transport with a fixed message, logging grpc-js's text", () => {
    const down = toAdminError(grpcError(status.UNAVAILABLE, 'connect ECONNREFUSED 10.0.0.7:50051'));
    expect([down.status, down.message]).toEqual([status.UNAVAILABLE, WORKER_UNAVAILABLE_MESSAGE]); // before: `Worker unavailable: connect ECONNREFUSED 10.0.0.7:50051`
    const slow = toAdminError(grpcError(status.DEADLINE_EXCEEDED, 'Deadline exceeded after 60.002s,remote_addr=10.0.0.7:50051'));
    expect([slow.status, slow.message]).toEqual([status.DEADLINE_EXCEEDED, WORKER_TIMEOUT_MESSAGE]);
    expect(spies.warn).toHaveBeenCalledTimes(2);
    expect(String(spies.warn.mock.calls[1][0])).toContain('remote_addr=10.0.0.7:50051');
  });

  it("makes any other failure a logged 500 with the generic message", () => {
    const raised = toAdminError(grpcError(status.UNKNOWN, "Exception calling application: KeyError('secret')"));
    expect([raised.status, raised.message]).toEqual([status.INTERNAL, INTERNAL_ERROR_MESSAGE]); // before: UNKNOWN with its text
    const bug = toAdminError(new TypeError("Cannot read properties of undefined (reading 'secret')"));
    expect([bug.status, bug.message]).toEqual([status.INTERNAL, INTERNAL_ERROR_MESSAGE]); // before: the TypeError's text
    expect(spies.error).toHaveBeenCalledTimes(2);
    expect(String(spies.error.mock.calls[0][0])).toContain("KeyError('secret')");
  });
});

/**
 * gRPC Generate with best_of holds every candidate's token logprobs until the ranking (inference-handlers.ts
 * rankedChoices): over the cap REST applies to a non-streamed response (input-bounds.ts checkLogprobEntries) it is
 * refused as INVALID_ARGUMENT naming sampling.logprobs, and no candidate starts.
 */
import { status } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import type { inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { generateCall } from '../testing/generate-call';
import { startOnly } from '../testing/start-only';

/** A WorkersService with no ready worker (only what these handlers ask of it). */
const NO_WORKERS = { maxModelLen: () => undefined } as unknown as WorkersService;

async function generate(req: inference.GenerateRequest, workers: WorkersService = NO_WORKERS): Promise<{ err: ServiceError | null; started: number; released: number }> {
  const { done, stream } = generateCall(req);
  const start = jest.fn().mockRejectedValue(new Error('must not start'));
  const release = jest.fn();
  const gate = { admit: jest.fn().mockResolvedValue(release) } as unknown as CallGate;
  inferenceHandlers(startOnly(start), workers, gate).generate(stream);
  const err = await done;
  await new Promise((r) => setImmediate(r));
  return { err, started: start.mock.calls.length, released: release.mock.calls.length };
}

describe('gRPC Generate best_of logprobs held for the ranking', () => {
  it('refuses the reviewer\'s request (16 x 32768 x 21 = 11M entries) naming sampling.logprobs', async () => {
    const req: inference.GenerateRequest = {
      model: 'sql', prompt: 'hi', messages: [], requestId: '', n: 1, bestOf: 16,
      sampling: { maxTokens: 32_768, stop: [], stopTokenIds: [], ignoreEos: false, logprobs: 20 },
    };
    const { err, started, released } = await generate(req);
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.metadata.get('x-inlaid-param')).toEqual(['sampling.logprobs']);
    expect(started).toBe(0);
    expect(released).toBe(1);
  });

  it("counts a max_tokens left out at the served model's length (WorkersService.maxModelLen), 32,768 when unknown", async () => {
    const req: inference.GenerateRequest = {
      model: 'sql', prompt: 'hi', messages: [], requestId: '', n: 1, bestOf: 4,
      sampling: { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false, logprobs: 1 },
    }; // 4 x 131,071 x 2 = 1.05M on a 131,072-token model; 4 x 32,768 x 2 = 262k when the length is not known
    const long = { maxModelLen: jest.fn(() => 131_072) } as unknown as WorkersService;
    const refused = await generate(req, long);
    expect(refused.err?.code).toBe(status.INVALID_ARGUMENT);
    expect(refused.err?.metadata.get('x-inlaid-param')).toEqual(['sampling.logprobs']);
    expect(refused.started).toBe(0);
    const unknown = await generate(req); // accepted: it goes on to start (and this fake refuses to start)
    expect(unknown.err?.metadata.get('x-inlaid-param') ?? []).not.toEqual(['sampling.logprobs']);
    expect(unknown.started).toBe(4); // its 4 candidates were started
  });
});

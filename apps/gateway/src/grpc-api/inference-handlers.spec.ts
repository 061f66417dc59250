/**
 * The gRPC Generate handler's admission (a request with n choices, or best_of candidates, counts that many times
 * against the key's limits), best_of's ranked responses, and refusals naming proto fields.
 */
import { status } from '@grpc/grpc-js';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { common, type inference } from '@inlaid/proto';
import { EventEmitter } from 'node:events';
import type { CallGate } from '../auth/call-gate.service';
import { INTERNAL_ERROR_MESSAGE, InlaidError } from '../common/inlaid-error';
import { Logger } from '@nestjs/common';
import { toServiceError } from './inference-handlers';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta, GenerationInput } from '../generation/generation.types';
import type { WorkersService } from '../workers/workers.service';
import { HERMES_FALLBACK } from '../openai/tool-format';
import { inferenceHandlers } from './inference-handlers';
import { generateCall } from '../testing/generate-call';
import { startOnly } from '../testing/start-only';

/** A WorkersService with no ready worker (only what these handlers ask of it). */
const NO_WORKERS = { maxModelLen: () => undefined } as unknown as WorkersService;

const request = (n: number): inference.GenerateRequest => ({
  model: 'sql', prompt: 'hi', messages: [], requestId: '', n,
  sampling: { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false },
});

const call = generateCall;

function generationService(cachedTokens: number): GenerationService {
  const start = (): Promise<Generation> => {
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      yield { text: 'x', tokenIds: [7], finishReason: 'length', promptTokens: 40, completionTokens: 1, cachedTokens };
    }
    return Promise.resolve({ id: 'g', model: 'sql', promptTokens: 40, created: 1, deltas: deltas(), abort: () => undefined });
  };
  return startOnly(start);
}

const stream = (c: EventEmitter) => c as unknown as ServerWritableStream<inference.GenerateRequest, inference.GenerateResponse>;

describe('inference Generate admission', () => {
  it('admits n times and releases once every choice has ended', async () => {
    const release = jest.fn();
    const admit = jest.fn().mockResolvedValue(release);
    const handlers = inferenceHandlers(generationService(32), NO_WORKERS, { admit } as unknown as CallGate);
    const { c, done } = call(request(3));
    handlers.generate(stream(c));
    expect(await done).toBeNull();
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 3);
    expect(c.write).toHaveBeenCalledTimes(3);
    expect(c.write.mock.calls.map((w) => (w[0] as inference.GenerateResponse).cachedTokens)).toEqual([32, 32, 32]);
    await new Promise((r) => setImmediate(r));
    expect(release).toHaveBeenCalledTimes(1);
  });

  it('answers RESOURCE_EXHAUSTED with retry-after when the key has fewer than n left', async () => {
    const admit = jest.fn().mockRejectedValue(InlaidError.rateLimited('Rate limit reached', 12));
    const handlers = inferenceHandlers(generationService(0), NO_WORKERS, { admit } as unknown as CallGate);
    const { c, done } = call(request(16));
    handlers.generate(stream(c));
    const err = await done;
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 16);
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err?.metadata.get('retry-after')).toEqual(['12']);
  });

  it('counts an invalid n once, then refuses it as INVALID_ARGUMENT', async () => {
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(generationService(0), NO_WORKERS, { admit } as unknown as CallGate);
    const { c, done } = call(request(17));
    handlers.generate(stream(c));
    expect((await done)?.code).toBe(status.INVALID_ARGUMENT);
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 1);
  });
});

describe('inference Generate best_of', () => {
  /** Candidate k (by request id suffix) yields two tokens with logprob means[k] each. */
  function candidates(means: number[], seen: GenerationInput[]): GenerationService {
    const start = (input: GenerationInput): Promise<Generation> => {
      seen.push(input);
      const k = Number(input.requestId?.split('#').pop());
      const lp = (t: number) => ({ sampled: { tokenId: t, token: 't', tokenBytes: Buffer.from('t'), logprob: means[k] as number }, top: [] });
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        const logprobs = input.sampling.logprobs !== undefined;
        yield { text: `c${k}a`, tokenIds: [k], finishReason: null, promptTokens: 4, completionTokens: 1, ...(logprobs ? { logprobs: [lp(k)] } : {}) };
        yield { text: `c${k}b`, tokenIds: [k], finishReason: 'length', promptTokens: 4, completionTokens: 2, ...(logprobs ? { logprobs: [lp(k)] } : {}) };
      }
      return Promise.resolve({ id: input.requestId as string, model: 'sql', promptTokens: 4, created: 1, deltas: deltas(), abort: () => undefined });
    };
    return startOnly(start);
  }

  async function run(req: inference.GenerateRequest, means: number[]) {
    const seen: GenerationInput[] = [];
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(candidates(means, seen), NO_WORKERS, { admit } as unknown as CallGate);
    const { c, done } = call(req);
    handlers.generate(stream(c));
    const err = await done;
    return { err, admit, seen, out: c.write.mock.calls.map((w) => w[0] as inference.GenerateResponse) };
  }

  it('runs best_of candidates, counts best_of against the key, sends the n best renumbered best first', async () => {
    const { err, admit, seen, out } = await run({ ...request(2), bestOf: 4 }, [-2, -0.5, -3, -1]);
    expect(err).toBeNull();
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 4);
    expect(seen).toHaveLength(4);
    expect(seen.every((i) => i.sampling.logprobs === 0)).toBe(true);
    expect(out.map((m) => [m.index, m.text])).toEqual([[0, 'c1a'], [0, 'c1b'], [1, 'c3a'], [1, 'c3b']]);
    expect(out.every((m) => m.logprobs === undefined)).toBe(true); // the client did not ask for them
    expect(out[1]?.finishReason).toBe(common.FinishReason.FINISH_REASON_LENGTH);
  });

  it('keeps the logprobs the client asked for', async () => {
    const req = { ...request(1), bestOf: 2, sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false, logprobs: 2 } };
    const { out, seen } = await run(req, [-1, -0.1]);
    expect(seen.every((i) => i.sampling.logprobs === 2)).toBe(true);
    expect(out.map((m) => [m.index, m.text, m.logprobs?.tokens[0]?.sampled?.logprob])).toEqual([[0, 'c1a', -0.1], [0, 'c1b', -0.1]]);
  });

  it('refuses best_of below n, or above n on chat, as INVALID_ARGUMENT naming best_of', async () => {
    for (const req of [{ ...request(3), bestOf: 2 }, { ...request(1), prompt: '', messages: [{ role: 'user', content: 'x' }], bestOf: 2 }]) {
      const { err, seen } = await run(req, [-1, -1, -1]);
      expect(err?.code).toBe(status.INVALID_ARGUMENT);
      expect(err?.metadata.get('x-inlaid-param')).toEqual(['best_of']);
      expect(seen).toHaveLength(0);
    }
  });
});

describe('inference Generate refusals name proto fields', () => {
  function refusing(err: InlaidError): GenerationService {
    return startOnly(() => Promise.reject(err));
  }

  async function paramOf(err: InlaidError, req: inference.GenerateRequest): Promise<string[]> {
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const workers = { toolSupport: () => HERMES_FALLBACK, maxModelLen: () => undefined } as unknown as WorkersService;
    const handlers = inferenceHandlers(refusing(err), workers, { admit } as unknown as CallGate);
    const { c, done } = call(req);
    handlers.generate(stream(c));
    const e = await done;
    expect(e?.code).toBe(status.INVALID_ARGUMENT);
    return e?.metadata.get('x-inlaid-param') as string[];
  }

  const worker = (param: string) => new InlaidError(status.INVALID_ARGUMENT, `${param}: refused`, { param });
  const chat = (tools?: inference.Tools): inference.GenerateRequest => ({
    ...request(1), prompt: '', messages: [{ role: 'user', content: 'hi' }], ...(tools !== undefined ? { tools } : {}),
  });
  const TOOLS: inference.Tools = { functions: [{ name: 'f', description: '', parameters: '' }], choice: 'required', function: '', parallelToolCalls: true };

  it("a worker's refusal of the call schema names tools.functions", async () => {
    expect(await paramOf(worker('response_format'), chat(TOOLS))).toEqual(['tools.functions']);
  });

  it("a worker's logit_bias or response_format refusal names the sampling field", async () => {
    expect(await paramOf(worker('logit_bias'), request(1))).toEqual(['sampling.logit_bias']);
    expect(await paramOf(worker('response_format'), request(1))).toEqual(['sampling.response_format']);
    expect(await paramOf(worker('prompt_logprobs'), request(1))).toEqual(['sampling.prompt_logprobs']); // before: prompt_logprobs
    expect(await paramOf(worker('model'), request(1))).toEqual(['model']);
  });
});

describe('toServiceError of an unexpected error (a bug)', () => {
  it('sends INTERNAL with the generic message, its text logged once, not sent', async () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const bug = new TypeError("Cannot read properties of undefined (reading 'secret_slot')");
      const e = toServiceError(bug);
      expect(e).toMatchObject({ code: status.INTERNAL, details: INTERNAL_ERROR_MESSAGE, message: INTERNAL_ERROR_MESSAGE });
      expect(JSON.stringify(e)).not.toContain('secret_slot'); // before: "TypeError: Cannot read ... 'secret_slot'"
      expect(logged).toHaveBeenCalledTimes(1);
      // and through a handler: Generate's failure after admission
      const admit = jest.fn().mockResolvedValue(() => undefined);
      const failing = startOnly(() => Promise.reject(bug));
      const handlers = inferenceHandlers(failing, NO_WORKERS, { admit } as unknown as CallGate);
      const { c, done } = call(request(1));
      handlers.generate(stream(c));
      const err = await done;
      expect(err?.code).toBe(status.INTERNAL);
      expect(err?.details).toBe(INTERNAL_ERROR_MESSAGE);
      expect(logged).toHaveBeenCalledTimes(2);
    } finally {
      logged.mockRestore();
    }
  });

  it('keeps an InlaidError as is, logging nothing', () => {
    const logged = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      expect(toServiceError(InlaidError.unavailable('Worker w1 disconnected.'))).toMatchObject({ code: status.UNAVAILABLE, details: 'Worker w1 disconnected.' });
      expect(logged).not.toHaveBeenCalled();
    } finally {
      logged.mockRestore();
    }
  });
});

/** A generation of `total` deltas counting how many its consumer has pulled. */
function countingGeneration(total: number) {
  const counter = { pulled: 0 };
  const start = (): Promise<Generation> => {
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      for (let i = 1; i <= total; i++) {
        counter.pulled = i;
        yield { text: 'x', tokenIds: [7], finishReason: i === total ? 'length' : null, promptTokens: 2, completionTokens: i };
      }
    }
    return Promise.resolve({ id: 'g', model: 'sql', promptTokens: 2, created: 1, deltas: deltas(), abort: () => undefined });
  };
  return { generation: startOnly(start), counter };
}

const ticks = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('inference Generate back-pressure', () => {
  it('stops pulling deltas while the client does not read, and resumes on drain', async () => {
    const { generation, counter } = countingGeneration(1000);
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(generation, NO_WORKERS, { admit } as unknown as CallGate);
    const { c, done } = call(request(1));
    let full = true; // the client stopped reading: every write says the buffer is full
    c.write.mockImplementation(() => !full);
    handlers.generate(stream(c));
    await ticks(50);
    // before: all 1000 pulled and written while the client read nothing
    expect(counter.pulled).toBeLessThanOrEqual(3); // the one written, and mergeChoices' one pulled ahead
    expect(c.write).toHaveBeenCalledTimes(1);
    full = false;
    c.emit('drain');
    expect(await done).toBeNull();
    expect(counter.pulled).toBe(1000);
    expect(c.write).toHaveBeenCalledTimes(1000);
  });

  it('stops waiting when the client cancels', async () => {
    const { generation, counter } = countingGeneration(1000);
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(generation, NO_WORKERS, { admit } as unknown as CallGate);
    const { c } = call(request(1));
    c.write.mockReturnValue(false);
    handlers.generate(stream(c));
    await ticks(50);
    expect(c.write).toHaveBeenCalledTimes(1);
    c.cancelled = true;
    c.emit('cancelled');
    await ticks(50);
    expect(c.write).toHaveBeenCalledTimes(1); // the loop left (call.cancelled): nothing more written
    expect(counter.pulled).toBeLessThanOrEqual(3);
    expect(c.listenerCount('drain')).toBe(0); // its wait's listeners removed
  });
});

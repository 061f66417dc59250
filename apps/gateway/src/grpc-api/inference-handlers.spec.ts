/** The gRPC Generate handler's admission: a request with n choices counts n times against the key's limits. */
import { Metadata, status } from '@grpc/grpc-js';
import type { ServerWritableStream, ServiceError } from '@grpc/grpc-js';
import type { inference } from '@inlaid/proto';
import { EventEmitter } from 'node:events';
import type { CallGate } from '../auth/call-gate.service';
import { InlaidError } from '../common/inlaid-error';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta } from '../generation/generation.types';
import type { WorkersService } from '../workers/workers.service';
import { HERMES_FALLBACK } from '../openai/tool-format';
import { inferenceHandlers } from './inference-handlers';

const request = (n: number): inference.GenerateRequest => ({
  model: 'sql', prompt: 'hi', messages: [], requestId: '', n,
  sampling: { maxTokens: 1, stop: [], stopTokenIds: [], ignoreEos: false },
});

function call(req: inference.GenerateRequest) {
  const metadata = new Metadata();
  metadata.set('authorization', 'Bearer k');
  const c = Object.assign(new EventEmitter(), { request: req, metadata, cancelled: false, write: jest.fn(), end: jest.fn() });
  const done = new Promise<ServiceError | null>((resolve) => {
    c.on('error', (e: ServiceError) => resolve(e));
    c.end.mockImplementation(() => resolve(null));
  });
  return { c, done };
}

function generationService(cachedTokens: number): GenerationService {
  const start = (): Promise<Generation> => {
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      yield { text: 'x', tokenIds: [7], finishReason: 'length', promptTokens: 40, completionTokens: 1, cachedTokens };
    }
    return Promise.resolve({ id: 'g', model: 'sql', promptTokens: 40, created: 1, deltas: deltas(), abort: () => undefined });
  };
  return { start } as unknown as GenerationService;
}

const stream = (c: EventEmitter) => c as unknown as ServerWritableStream<inference.GenerateRequest, inference.GenerateResponse>;

describe('inference Generate admission', () => {
  it('admits n times and releases once every choice has ended', async () => {
    const release = jest.fn();
    const admit = jest.fn().mockResolvedValue(release);
    const handlers = inferenceHandlers(generationService(32), {} as WorkersService, { admit } as unknown as CallGate);
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
    const handlers = inferenceHandlers(generationService(0), {} as WorkersService, { admit } as unknown as CallGate);
    const { c, done } = call(request(16));
    handlers.generate(stream(c));
    const err = await done;
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 16);
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err?.metadata.get('retry-after')).toEqual(['12']);
  });

  it('counts an invalid n once, then refuses it as INVALID_ARGUMENT', async () => {
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const handlers = inferenceHandlers(generationService(0), {} as WorkersService, { admit } as unknown as CallGate);
    const { c, done } = call(request(17));
    handlers.generate(stream(c));
    expect((await done)?.code).toBe(status.INVALID_ARGUMENT);
    expect(admit).toHaveBeenCalledWith('Bearer k', 'inference', 1);
  });
});

describe('inference Generate refusals name proto fields', () => {
  function refusing(err: InlaidError): GenerationService {
    return { start: () => Promise.reject(err) } as unknown as GenerationService;
  }

  async function paramOf(err: InlaidError, req: inference.GenerateRequest): Promise<string[]> {
    const admit = jest.fn().mockResolvedValue(() => undefined);
    const workers = { toolSupport: () => HERMES_FALLBACK } as unknown as WorkersService;
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
    expect(await paramOf(worker('model'), request(1))).toEqual(['model']);
  });
});

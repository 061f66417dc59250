/**
 * A Generate client that stops reading is stopped after the drain timeout with a stream reset (RST_STREAM
 * ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to gRPC clients) that reaches it at once. Before, the RESOURCE_EXHAUSTED status
 * went out as trailers queued behind the messages it had not read, so it never arrived while the client read nothing.
 * The same after a generation that finished while its client read nothing: its trailers wait behind the unread
 * messages, so the stream is reset when it has not closed within the drain timeout (before: it stayed open).
 * Real grpc-js server with the gateway's handlers (generation and gate stubs); the stalled client is a raw HTTP/2 client
 * that stops reading (a grpc-js client keeps reading into its own buffer), and a grpc-js client shows what the reset
 * reads as.
 */
import { credentials, Metadata, Server, status, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta } from '../generation/generation.types';
import type { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { EventEmitter } from 'node:events';
import { resetIfUnfinished, resetStalled } from './stalled-call';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';
import { startOnly } from '../testing/start-only';

const DRAIN_TIMEOUT_MS = 200;

/** 16 KiB deltas, `count` of them (the last one finished) or without end (until aborted). */
function generationOf(count: number, aborted: string[]): GenerationService {
  const start = (): Promise<Generation> => {
    let stop = false;
    async function* deltas(): AsyncGenerator<GenerationDelta> {
      for (let i = 1; !stop && i <= count; i++) {
        yield { text: 'x'.repeat(16 * 1024), tokenIds: [7], finishReason: i === count ? 'length' : null, promptTokens: 2, completionTokens: i };
        await new Promise((r) => setImmediate(r));
      }
      stop = true; // finished: a later abort is a no-op, as GenerationService's
    }
    const abort = (reason: string): void => {
      if (!stop) aborted.push(reason); // idempotent, as GenerationService's
      stop = true;
    };
    return Promise.resolve({ id: 'g', model: 'sql', promptTokens: 2, created: 1, deltas: deltas(), abort });
  };
  return startOnly(start);
}

/** The gateway's handlers on a local server; `released` counts the key's releases, `releasedAt` the last one's time. */
async function serve(generation: GenerationService): Promise<{ server: Server; port: number; released: () => number; releasedAt: () => number | undefined }> {
  let released = 0;
  let releasedAt: number | undefined;
  const release = (): void => {
    released += 1;
    releasedAt = performance.now();
  };
  const gate = { admit: () => Promise.resolve(release) } as unknown as CallGate;
  const workers = { maxModelLen: () => undefined, toolSupport: () => undefined } as unknown as WorkersService;
  const server = new Server();
  server.addService(inference.InferenceService, inferenceHandlers(generation, workers, gate, { drainTimeoutMs: DRAIN_TIMEOUT_MS }));
  return { server, port: await bindLocal(server), released: () => released, releasedAt: () => releasedAt };
}

/** A Generate call from a raw HTTP/2 client (it reads only as the test lets it), with what reached it and when it closed. */
function rawGenerate(session: ClientHttp2Session): { req: ClientHttp2Stream; trailers: () => unknown; rstCode: () => number | undefined; closedAt: () => number | undefined } {
  const req = session.request({ ':method': 'POST', ':path': '/inlaid.v1.Inference/Generate', 'content-type': 'application/grpc', te: 'trailers' });
  const msg = Buffer.from(inference.GenerateRequest.encode({ model: 'sql', prompt: 'hi', messages: [], requestId: '' }).finish());
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  req.end(frame);
  let trailers: unknown;
  let rstCode: number | undefined;
  let closedAt: number | undefined;
  req.on('trailers', (t) => (trailers = t));
  req.on('close', () => {
    rstCode = req.rstCode;
    closedAt = performance.now();
  });
  req.on('error', () => undefined);
  return { req, trailers: () => trailers, rstCode: () => rstCode, closedAt: () => closedAt };
}

describe('gRPC Generate: a client that stops reading', () => {
  let served: Awaited<ReturnType<typeof serve>>;
  const aborted: string[] = [];

  beforeAll(async () => {
    served = await serve(generationOf(Infinity, aborted)); // a generation that never ends
  });

  afterAll(() => served?.server.forceShutdown());

  it('gets a stream reset at once, while it still reads nothing; the generation is aborted and the key released', async () => {
    const session = connect(`http://127.0.0.1:${served.port}`);
    try {
      const call = rawGenerate(session);
      let read = 0;
      call.req.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > 100_000) call.req.pause(); // reads a few messages, then nothing more
      });
      await eventually(() => aborted.length === 1, 'the generation aborted after the drain timeout');
      expect(aborted).toEqual(['client did not read']);
      // before: nothing reached the client (its status waited behind the unread messages, for as long as it read nothing)
      await eventually(() => call.rstCode() !== undefined, 'the client sees the stream end', 1000);
      expect(call.rstCode()).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(call.trailers()).toBeUndefined();
      await eventually(() => served.released() === 1, 'the key released');
    } finally {
      session.destroy();
    }
  });
});

describe('gRPC Generate: a generation that finishes while its client reads nothing', () => {
  let served: Awaited<ReturnType<typeof serve>>;
  const aborted: string[] = [];

  beforeAll(async () => {
    // 96 KiB: more than the client's 64 KiB flow-control window, so the trailers wait behind unread DATA
    served = await serve(generationOf(6, aborted));
  });

  afterAll(() => served?.server.forceShutdown());

  it('is reset once the drain timeout passed after its end; the key is released at the end', async () => {
    const session = connect(`http://127.0.0.1:${served.port}`);
    try {
      const call = rawGenerate(session);
      call.req.pause(); // reads nothing at all
      await eventually(() => served.released() === 1, 'the generation ended and the key released');
      // before: the stream stayed open as long as the connection did
      await eventually(() => call.rstCode() !== undefined, 'the stream reset after the drain timeout', DRAIN_TIMEOUT_MS + 2000);
      expect(call.rstCode()).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
      // not at the end but about a drain timeout after it (the times the events had, however late this test looks)
      expect((call.closedAt() ?? 0) - (served.releasedAt() ?? Infinity)).toBeGreaterThanOrEqual(DRAIN_TIMEOUT_MS / 2);
      expect(call.trailers()).toBeUndefined();
    } finally {
      session.destroy();
    }
  });

  it('a client that reads gets its trailers (status OK), not a reset', async () => {
    const session = connect(`http://127.0.0.1:${served.port}`);
    try {
      const call = rawGenerate(session);
      call.req.on('data', () => undefined);
      await eventually(() => call.rstCode() !== undefined, 'the stream closed');
      expect(call.rstCode()).toBe(constants.NGHTTP2_NO_ERROR);
      expect(call.trailers()).toMatchObject({ 'grpc-status': '0' });
      expect(aborted).toEqual([]);
    } finally {
      session.destroy();
    }
  });
});

describe('resetStalled', () => {
  it('finds the HTTP/2 stream of a grpc-js server call; a grpc-js client reads the reset as RESOURCE_EXHAUSTED', async () => {
    let found: boolean | undefined;
    const server = new Server();
    server.addService(inference.InferenceService, {
      generate: (call: ServerWritableStream<inference.GenerateRequest, inference.GenerateResponse>) => {
        call.write({ requestId: 'r', text: 'a', toolCalls: [], tokenIds: [], finishReason: 0, promptTokens: 0, completionTokens: 0, cachedTokens: 0, index: 0 });
        setTimeout(() => (found = resetStalled(call)), 50);
      },
    } as unknown as inference.InferenceServer);
    const client = new inference.InferenceClient(`127.0.0.1:${await bindLocal(server)}`, credentials.createInsecure());
    try {
      const err = await new Promise<ServiceError>((resolve) => {
        const call = client.generate({ model: 'sql', prompt: 'hi', messages: [], requestId: '' }, new Metadata());
        call.on('data', () => undefined);
        call.on('error', resolve);
      });
      expect(found).toBe(true); // false: grpc-js no longer holds its stream where stalled-call.ts looks
      expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    } finally {
      client.close();
      server.forceShutdown();
    }
  });

  it('says so when the call holds no HTTP/2 stream', () => {
    expect(resetStalled({})).toBe(false);
    expect(resetStalled({ call: { stream: {} } })).toBe(false);
    expect(() => resetIfUnfinished({}, 10)).not.toThrow();
  });

  it('resetIfUnfinished resets a stream still open after `ms`, and not one that closed before', async () => {
    const streamOf = () => Object.assign(new EventEmitter(), { destroyed: false, codes: [] as number[], close(code: number) { this.codes.push(code); } });
    const open = streamOf();
    const closed = streamOf();
    resetIfUnfinished({ call: { stream: open } }, 20);
    resetIfUnfinished({ call: { stream: closed } }, 20);
    closed.emit('close');
    await new Promise((r) => setTimeout(r, 60));
    expect(open.codes).toEqual([constants.NGHTTP2_ENHANCE_YOUR_CALM]);
    expect(closed.codes).toEqual([]);
  });
});

/**
 * A Generate client that stops reading is stopped after the drain timeout with a stream reset (RST_STREAM
 * ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to gRPC clients) that reaches it at once. Before, the RESOURCE_EXHAUSTED status
 * went out as trailers queued behind the messages it had not read, so it never arrived while the client read nothing.
 * Real grpc-js server with the gateway's handlers (generation and gate stubs); the stalled client is a raw HTTP/2 client
 * that stops reading (a grpc-js client keeps reading into its own buffer), and a grpc-js client shows what the reset
 * reads as.
 */
import { credentials, Metadata, Server, status, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import { connect, constants } from 'node:http2';
import { inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import type { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationDelta } from '../generation/generation.types';
import type { WorkersService } from '../workers/workers.service';
import { inferenceHandlers } from './inference-handlers';
import { resetStalled } from './stalled-call';
import { eventually } from '../testing/eventually';
import { bindLocal } from '../testing/local-grpc';



const DRAIN_TIMEOUT_MS = 200;

describe('gRPC Generate: a client that stops reading', () => {
  let server: Server;
  let port: number;
  const aborted: string[] = [];
  let released = 0;

  beforeAll(async () => {
    // a generation that never ends: 16 KiB deltas until it is aborted
    const start = (): Promise<Generation> => {
      let stop = false;
      async function* deltas(): AsyncGenerator<GenerationDelta> {
        for (let i = 1; !stop; i++) {
          yield { text: 'x'.repeat(16 * 1024), tokenIds: [7], finishReason: null, promptTokens: 2, completionTokens: i };
          await new Promise((r) => setImmediate(r));
        }
      }
      const abort = (reason: string): void => {
        if (!stop) aborted.push(reason); // idempotent, as GenerationService's
        stop = true;
      };
      return Promise.resolve({ id: 'g', model: 'sql', promptTokens: 2, created: 1, deltas: deltas(), abort });
    };
    const gate = { admit: () => Promise.resolve(() => void (released += 1)) } as unknown as CallGate;
    const workers = { maxModelLen: () => undefined, toolSupport: () => undefined } as unknown as WorkersService;
    server = new Server();
    server.addService(inference.InferenceService, inferenceHandlers({ start } as unknown as GenerationService, workers, gate, { drainTimeoutMs: DRAIN_TIMEOUT_MS }));
    port = await bindLocal(server);
  });

  afterAll(() => server?.forceShutdown());

  it('gets a stream reset at once, while it still reads nothing; the generation is aborted and the key released', async () => {
    const session = connect(`http://127.0.0.1:${port}`);
    try {
      const req = session.request({ ':method': 'POST', ':path': '/inlaid.v1.Inference/Generate', 'content-type': 'application/grpc', te: 'trailers' });
      const msg = Buffer.from(inference.GenerateRequest.encode({ model: 'sql', prompt: 'hi', messages: [], requestId: '' }).finish());
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      msg.copy(frame, 5);
      req.end(frame);
      let trailers: Record<string, unknown> | undefined;
      let rstCode: number | undefined;
      req.on('trailers', (t) => (trailers = t));
      req.on('close', () => (rstCode = req.rstCode));
      req.on('error', () => undefined);
      let read = 0;
      req.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > 100_000) req.pause(); // reads a few messages, then nothing more
      });
      await eventually(() => aborted.length === 1, 'the generation aborted after the drain timeout');
      expect(aborted).toEqual(['client did not read']);
      // before: nothing reached the client (its status waited behind the unread messages, for as long as it read nothing)
      await eventually(() => rstCode !== undefined, 'the client sees the stream end', 1000);
      expect(rstCode).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(trailers).toBeUndefined();
      await eventually(() => released === 1, 'the key released');
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
  });
});

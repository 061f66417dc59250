/**
 * A fake gRPC Generate call for the handlers' specs: an authorized request, `write` / `end` spies, and `done`, which
 * settles with the status error the handler sent, or null once it ended the stream.
 */
import { Metadata } from '@grpc/grpc-js';
import type { ServerWritableStream, ServiceError } from '@grpc/grpc-js';
import type { inference } from '@inlaid/proto';
import { EventEmitter } from 'node:events';

export type GenerateStream = ServerWritableStream<inference.GenerateRequest, inference.GenerateResponse>;

export function generateCall(request: inference.GenerateRequest) {
  const metadata = new Metadata();
  metadata.set('authorization', 'Bearer k');
  const c = Object.assign(new EventEmitter(), { request, metadata, cancelled: false, write: jest.fn(), end: jest.fn() });
  const done = new Promise<ServiceError | null>((resolve) => {
    c.on('error', (e: ServiceError) => resolve(e));
    c.end.mockImplementation(() => resolve(null));
  });
  return { c, done, stream: c as unknown as GenerateStream };
}

/**
 * Ends a server stream whose client stopped reading. Its status would go out as trailers, and HTTP/2 sends those only
 * after the DATA already queued on the stream, which waits on the client's flow-control window: a client that reads
 * nothing never gets the status, and the stream stays open as long as the connection does. RST_STREAM with
 * ENHANCE_YOUR_CALM goes out at once and drops what was queued; gRPC maps it to RESOURCE_EXHAUSTED (PROTOCOL-HTTP2.md),
 * with the client library's own message (grpc-js: "Bandwidth exhausted or memory limit exceeded").
 *
 * grpc-js has no public way to reset a stream: its HTTP/2 stream is reached through the call (the call's `call` is
 * server-interceptors' BaseServerInterceptingCall when the server has no interceptors, and that holds `stream`). Where
 * it is not found (another grpc-js), the status is sent the usual way.
 */
import { constants } from 'node:http2';

interface ResettableStream {
  readonly destroyed: boolean;
  close(code: number): void;
}

function http2StreamOf(call: object): ResettableStream | undefined {
  const stream = (call as { call?: { stream?: unknown } }).call?.stream;
  const s = stream as Partial<ResettableStream> | undefined;
  return typeof s?.close === 'function' && typeof s.destroyed === 'boolean' ? (s as ResettableStream) : undefined;
}

/** Resets the call's HTTP/2 stream (RESOURCE_EXHAUSTED to the client); false when it could not (then send the status). */
export function resetStalled(call: object): boolean {
  const stream = http2StreamOf(call);
  if (stream === undefined) return false;
  if (!stream.destroyed) stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
  return true;
}

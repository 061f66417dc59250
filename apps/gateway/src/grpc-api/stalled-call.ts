/**
 * Ends a server stream whose client stopped reading. Its status would go out as trailers, and HTTP/2 sends those only
 * after the DATA already queued on the stream, which waits on the client's flow-control window: a client that reads
 * nothing never gets the status, and the stream stays open as long as the connection does. RST_STREAM with
 * ENHANCE_YOUR_CALM goes out at once and drops what was queued; gRPC maps it to RESOURCE_EXHAUSTED (PROTOCOL-HTTP2.md),
 * with the client library's own message (grpc-js: "Bandwidth exhausted or memory limit exceeded"). The same holds after
 * a stream's end: its trailers wait behind what the client has not read, so a stream ended is reset too when it has not
 * closed within the drain timeout (resetIfUnfinished).
 *
 * grpc-js has no public way to reset a stream: its HTTP/2 stream is reached through the call (the call's `call` is
 * server-interceptors' BaseServerInterceptingCall when the server has no interceptors, and that holds `stream`). Where
 * it is not found (another grpc-js), the status is sent the usual way.
 */
import { constants } from 'node:http2';

interface ResettableStream {
  readonly destroyed: boolean;
  close(code: number): void;
  once(event: 'close', listener: () => void): unknown;
}

function http2StreamOf(call: object): ResettableStream | undefined {
  const stream = (call as { call?: { stream?: unknown } }).call?.stream;
  const s = stream as Partial<ResettableStream> | undefined;
  return typeof s?.close === 'function' && typeof s.once === 'function' && typeof s.destroyed === 'boolean' ? (s as ResettableStream) : undefined;
}

function reset(stream: ResettableStream): void {
  if (!stream.destroyed) stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
}

/** Resets the call's HTTP/2 stream (RESOURCE_EXHAUSTED to the client); false when it could not (then send the status). */
export function resetStalled(call: object): boolean {
  const stream = http2StreamOf(call);
  if (stream === undefined) return false;
  reset(stream);
  return true;
}

/**
 * Called once the call was ended (its status queued): resets its HTTP/2 stream if it has not closed within `ms` (the
 * client stopped reading before the trailers). The timer holds no process open and is cleared when the stream closes.
 */
export function resetIfUnfinished(call: object, ms: number): void {
  const stream = http2StreamOf(call);
  if (stream === undefined || stream.destroyed) return;
  const timer = setTimeout(() => reset(stream), ms);
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
}

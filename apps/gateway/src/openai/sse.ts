/** Server-sent-event framing for OpenAI streams: `data: <json>\n\n`, terminated by `data: [DONE]\n\n`. */

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
};

export const SSE_DONE = 'data: [DONE]\n\n';

export function sseEvent(payload: unknown): string {
  // JSON.stringify never emits raw newlines, so one `data:` line per event is always valid.
  return `data: ${JSON.stringify(payload)}\n\n`;
}

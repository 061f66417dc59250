/** Streaming (server-sent events) requests against the OpenAI-compatible API. */

export type Chunk = Record<string, any>;

export interface SseAnswer {
  readonly status: number;
  /** The JSON chunks, in order ([DONE] left out). */
  readonly chunks: Chunk[];
  /** How many `data: [DONE]` events came, and whether the last event was one. */
  readonly dones: number;
  readonly endsWithDone: boolean;
}

/** POSTs `body` with `stream: true` to `${baseUrl}/v1/${path}` and reads the whole event stream. */
export async function postSse(baseUrl: string, path: string, body: object): Promise<SseAnswer> {
  const res = await fetch(`${baseUrl}/v1/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const data = (await res.text())
    .split('\n\n')
    .filter((e) => e !== '')
    .map((e) => e.replace(/^data: /, ''));
  return {
    status: res.status,
    chunks: data.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d) as Chunk),
    dones: data.filter((d) => d === '[DONE]').length,
    endsWithDone: data[data.length - 1] === '[DONE]',
  };
}

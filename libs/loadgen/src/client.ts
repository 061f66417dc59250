/**
 * One streamed OpenAI completion (the I/O shell): POST /v1/completions with stream + include_usage,
 * read the SSE body as it arrives and time the first and last token. The output token count is the
 * server's usage when it sends one, else the number of non-empty text chunks.
 */
import { RequestTiming } from './metrics';
import { SseParser } from './sse';

export interface CompletionJob {
  readonly task: string;
  readonly prompt: string;
  readonly maxTokens: number;
  /** Scheduled send time on the `now` clock (seconds). */
  readonly sentS: number;
}

export interface ClientOptions {
  readonly url: string;
  readonly apiKey?: string;
  /** Send ignore_eos so the server generates exactly maxTokens (the Inlaid gateway supports it). */
  readonly ignoreEos: boolean;
  readonly timeoutS: number;
  readonly now: () => number;
}

interface StreamState {
  firstTokenS?: number;
  lastTokenS?: number;
  chunks: number;
  usageTokens?: number;
}

export function completionBody(job: CompletionJob, ignoreEos: boolean): Record<string, unknown> {
  return {
    model: job.task,
    prompt: job.prompt,
    max_tokens: job.maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...(ignoreEos ? { ignore_eos: true } : {}),
  };
}

/** Applies one SSE payload to the stream state; returns an error message for an error event. */
export function applyEvent(data: string, at: number, s: StreamState): string | undefined {
  if (data === '[DONE]') return undefined;
  const v = JSON.parse(data) as { error?: { message?: string }; choices?: { text?: string; delta?: { content?: string } }[]; usage?: { completion_tokens?: number } | null };
  if (v.error !== undefined) return v.error.message ?? 'error event';
  const text = v.choices?.[0]?.text ?? v.choices?.[0]?.delta?.content ?? '';
  if (text !== '') {
    s.firstTokenS ??= at;
    s.lastTokenS = at;
    s.chunks += 1;
  }
  if (typeof v.usage?.completion_tokens === 'number') s.usageTokens = v.usage.completion_tokens;
  return undefined;
}

export async function streamCompletion(job: CompletionJob, o: ClientOptions): Promise<RequestTiming> {
  const s: StreamState = { chunks: 0 };
  const done = (ok: boolean, error?: string): RequestTiming => ({
    task: job.task,
    sentS: job.sentS,
    firstTokenS: s.firstTokenS,
    lastTokenS: s.lastTokenS,
    endS: o.now(),
    outputTokens: s.usageTokens ?? s.chunks,
    ok,
    ...(error !== undefined ? { error } : {}),
  });
  try {
    const res = await fetch(new URL('/v1/completions', o.url), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(o.apiKey !== undefined ? { Authorization: `Bearer ${o.apiKey}` } : {}) },
      body: JSON.stringify(completionBody(job, o.ignoreEos)),
      signal: AbortSignal.timeout(o.timeoutS * 1000),
    });
    if (!res.ok || res.body === null) return done(false, `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    let error: string | undefined;
    for (;;) {
      const { value, done: eof } = await reader.read();
      const at = o.now();
      const events = eof ? parser.end() : parser.push(decoder.decode(value, { stream: true }));
      for (const e of events) error ??= applyEvent(e, at, s);
      if (eof) break;
    }
    return done(error === undefined && s.firstTokenS !== undefined, error ?? (s.firstTokenS === undefined ? 'no tokens streamed' : undefined));
  } catch (e) {
    return done(false, (e as Error).message);
  }
}

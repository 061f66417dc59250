/**
 * Turns generation deltas into the SSE events of an OpenAI stream (pure). Chat streams open with a role
 * chunk and close with an empty-delta chunk carrying finish_reason; completion streams carry
 * finish_reason on their last text chunk. With include_usage, every chunk has `usage: null` and a final
 * chunk with empty choices carries the usage.
 */
import type { GenerationDelta } from '../generation/generation.types';
import {
  chatChunk,
  chatUsageChunk,
  completionChunk,
  completionUsageChunk,
  ResponseMeta,
  usageOf,
} from './response-shapes';
import { SSE_DONE, sseEvent } from './sse';

export type StreamKind = 'completions' | 'chat.completions';

export class StreamEncoder {
  private promptTokens = 0;
  private completionTokens = 0;

  constructor(
    private readonly kind: StreamKind,
    private readonly meta: ResponseMeta,
    private readonly includeUsage: boolean,
  ) {}

  /** Events sent before the first token. */
  open(): string[] {
    if (this.kind !== 'chat.completions') return [];
    return [sseEvent(chatChunk(this.meta, { role: 'assistant', content: '' }, null, this.includeUsage))];
  }

  /** Events for one delta; the final delta (finishReason set) also ends the stream. */
  delta(d: GenerationDelta): string[] {
    this.promptTokens = Math.max(this.promptTokens, d.promptTokens);
    this.completionTokens = Math.max(this.completionTokens, d.completionTokens);
    const out: string[] = [];
    if (this.kind === 'completions') {
      if (d.text !== '' || d.finishReason !== null) {
        out.push(sseEvent(completionChunk(this.meta, d.text, d.finishReason, this.includeUsage)));
      }
    } else {
      if (d.text !== '') out.push(sseEvent(chatChunk(this.meta, { content: d.text }, null, this.includeUsage)));
      if (d.finishReason !== null) out.push(sseEvent(chatChunk(this.meta, {}, d.finishReason, this.includeUsage)));
    }
    if (d.finishReason !== null) out.push(...this.close());
    return out;
  }

  private close(): string[] {
    const out: string[] = [];
    if (this.includeUsage) {
      const usage = usageOf(this.promptTokens, this.completionTokens);
      out.push(sseEvent(this.kind === 'completions' ? completionUsageChunk(this.meta, usage) : chatUsageChunk(this.meta, usage)));
    }
    out.push(SSE_DONE);
    return out;
  }
}

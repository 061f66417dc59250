/**
 * Turns generation deltas into the SSE events of an OpenAI stream (pure). Chat streams open with a role
 * chunk per choice and close each choice with an empty-delta chunk carrying finish_reason; completion
 * streams carry finish_reason on a choice's last text chunk. With include_usage, every chunk has
 * `usage: null` and a final chunk with empty choices carries the usage (prompt tokens once, completion
 * tokens summed over the choices, prompt_tokens_details.cached_tokens as response-shapes' cachedTokensOf). The stream ends ([DONE]) once every choice has finished.
 *
 * Logprobs: a chunk carries the logprobs of the tokens since the choice's previous chunk. A delta whose text
 * is held back by the worker (part of a character, a possible stop string) sends no chunk; its tokens'
 * logprobs go with the next chunk of that choice.
 *
 * Tools (chat with `tools` offered): a choice's text goes through its ToolCallParser (tool-calls.ts); content
 * events go out as `delta.content`, calls as `delta.tool_calls` (an opening delta with index, id, type and name,
 * then argument fragments), and a choice finishes with `tool_calls` per finishesWithToolCalls (tool-events.ts).
 *
 * Echo (completions): each choice's first chunk, sent at once, carries the prompt as its text. With logprobs it
 * waits for the prompt tokens' logprobs (openai/prompt-logprobs.ts), which only choice 0 is asked for (fan-out.ts):
 * every choice's deltas are held until a delta bringing them arrives (or choice 0 finishes without them), then each
 * choice's echo chunk carries them (the first token's logprob null) before its held deltas, so a choice that
 * finishes before choice 0 is scored still gets them first. The generated tokens' text_offset starts at the
 * prompt's length.
 */
import type { common } from '@inlaid/proto';
import type { GenerationDelta } from '../generation/generation.types';
import {
  chatChunk,
  chatLogprobs,
  chatUsageChunk,
  completionChoice,
  completionChunk,
  completionLogprobs,
  cachedTokensOf,
  charCount,
  completionUsageChunk,
  ResponseMeta,
  usageOf,
} from './response-shapes';
import { echoPromptLogprobs } from './prompt-logprobs';
import { SSE_DONE, sseEvent } from './sse';
import { toolCallParser } from './tool-calls';
import { finishesWithToolCalls, type ToolCallParser, type ToolEvent } from './tool-events';
import type { ToolPlan } from './tools';

export type StreamKind = 'completions' | 'chat.completions';

export interface StreamOptions {
  /** Number of choices (n). */
  readonly choices?: number;
  /** The request asked for logprobs: chunks carry a logprobs object for their tokens. */
  readonly logprobs?: boolean;
  /** Chat with tools offered: each choice's text is parsed for tool calls. */
  readonly tools?: ToolPlan;
  /** Completions' `echo`: the prompt, sent as each choice's first chunk. */
  readonly echo?: string;
  /** The request's top N (completions' `logprobs`): with `echo`, the prompt tokens' top N in the first chunk. */
  readonly topLogprobs?: number;
}

interface ChoiceState {
  completionTokens: number;
  cachedTokens: number;
  finished: boolean;
  pending: common.TokenLogprob[];
  textOffset: number;
  tools?: ToolCallParser;
  /** echo with logprobs: the choice's prompt chunk is not sent yet. */
  echoPending: boolean;
  /** The choice's deltas that arrived before the prompt's logprobs (echo with logprobs). */
  held: GenerationDelta[];
}

export class StreamEncoder {
  private promptTokens = 0;
  private readonly choices: ChoiceState[];
  private readonly logprobs: boolean;
  private readonly echo: string;
  private readonly topLogprobs: number;
  /** echo with logprobs: the prompt's logprobs (choice 0's), undefined until they arrive. */
  private prompt: readonly common.TokenLogprob[] | undefined;
  /** echo with logprobs, before the prompt's logprobs arrive: every choice's deltas are held. */
  private holding: boolean;

  constructor(
    private readonly kind: StreamKind,
    private readonly meta: ResponseMeta,
    private readonly includeUsage: boolean,
    options: StreamOptions = {},
  ) {
    const n = Math.max(1, options.choices ?? 1);
    const tools = options.tools;
    this.choices = Array.from({ length: n }, () => ({
      completionTokens: 0,
      cachedTokens: 0,
      finished: false,
      pending: [],
      textOffset: 0,
      echoPending: false,
      held: [],
      ...(tools !== undefined && kind === 'chat.completions' ? { tools: toolCallParser(tools) } : {}),
    }));
    this.logprobs = options.logprobs ?? false;
    this.echo = kind === 'completions' ? (options.echo ?? '') : '';
    this.topLogprobs = options.topLogprobs ?? 0;
    this.holding = this.echo !== '' && this.logprobs;
    if (this.holding) for (const c of this.choices) c.echoPending = true;
  }

  /** Events sent before the first token. */
  open(): string[] {
    if (this.kind !== 'chat.completions') {
      if (this.echo === '' || this.logprobs) return []; // with logprobs: in delta(), once the prompt's logprobs are in
      return this.choices.map((_, i) => sseEvent(completionChunk(this.meta, completionChoice(i, this.echo, null, null), this.includeUsage)));
    }
    return this.choices.map((_, i) => sseEvent(chatChunk(this.meta, { role: 'assistant', content: '' }, null, this.includeUsage, i)));
  }

  /** Events for one delta of choice `index`; once every choice has finished, the stream's closing events too. */
  delta(d: GenerationDelta, index = 0): string[] {
    const c = this.choices[index];
    if (c === undefined || c.finished) return [];
    if (!this.holding) return this.encode(c, d, index);
    c.held.push(d);
    // only choice 0 scores the prompt: a delta with its logprobs, or choice 0's end without them, releases them all
    if (d.promptLogprobs === undefined && !(index === 0 && d.finishReason !== null)) return [];
    this.holding = false;
    this.prompt = d.promptLogprobs ?? [];
    const out: string[] = [];
    this.choices.forEach((x, i) => {
      const held = x.held;
      x.held = [];
      for (const h of held) out.push(...this.encode(x, h, i));
    });
    return out;
  }

  private encode(c: ChoiceState, d: GenerationDelta, index: number): string[] {
    this.promptTokens = Math.max(this.promptTokens, d.promptTokens);
    c.completionTokens = Math.max(c.completionTokens, d.completionTokens);
    c.cachedTokens = Math.max(c.cachedTokens, d.cachedTokens ?? 0);
    if (this.logprobs && d.logprobs !== undefined) c.pending.push(...d.logprobs);
    const out: string[] = [];
    if (c.echoPending) {
      c.echoPending = false;
      const lp = echoPromptLogprobs(this.prompt ?? [], this.topLogprobs);
      out.push(sseEvent(completionChunk(this.meta, completionChoice(index, this.echo, null, lp), this.includeUsage)));
      c.textOffset = charCount(this.echo);
    }
    if (this.kind === 'completions') {
      if (d.text !== '' || d.finishReason !== null) {
        out.push(sseEvent(completionChunk(this.meta, completionChoice(index, d.text, d.finishReason, this.takeCompletionLogprobs(c)), this.includeUsage)));
      }
    } else if (c.tools !== undefined) {
      out.push(...this.toolChunks(c, c.tools, d, index));
    } else {
      if (d.text !== '') out.push(sseEvent(chatChunk(this.meta, { content: d.text }, null, this.includeUsage, index, this.takeChatLogprobs(c))));
      if (d.finishReason !== null) out.push(sseEvent(chatChunk(this.meta, {}, d.finishReason, this.includeUsage, index, this.takeChatLogprobs(c))));
    }
    if (d.finishReason !== null) {
      c.finished = true;
      if (this.choices.every((x) => x.finished)) out.push(...this.close());
    }
    return out;
  }

  private toolChunks(c: ChoiceState, parser: ToolCallParser, d: GenerationDelta, index: number): string[] {
    const events: ToolEvent[] = d.text !== '' ? parser.push(d.text) : [];
    if (d.finishReason !== null) events.push(...parser.finish());
    const out = events.map((e) =>
      sseEvent(chatChunk(this.meta, 'content' in e ? { content: e.content } : { tool_calls: [e.call] }, null, this.includeUsage, index, this.takeChatLogprobs(c))),
    );
    if (d.finishReason !== null) {
      out.push(sseEvent(chatChunk(this.meta, {}, d.finishReason, this.includeUsage, index, this.takeChatLogprobs(c), finishesWithToolCalls(parser, d.finishReason))));
    }
    return out;
  }

  private takeCompletionLogprobs(c: ChoiceState) {
    if (!this.logprobs) return null;
    const { logprobs, end } = completionLogprobs(c.pending, c.textOffset);
    c.textOffset = end;
    c.pending = [];
    return logprobs;
  }

  private takeChatLogprobs(c: ChoiceState) {
    if (!this.logprobs || c.pending.length === 0) return null;
    const logprobs = chatLogprobs(c.pending);
    c.pending = [];
    return logprobs;
  }

  private close(): string[] {
    const out: string[] = [];
    if (this.includeUsage) {
      const completion = this.choices.reduce((n, c) => n + c.completionTokens, 0);
      const cached = cachedTokensOf(this.choices.map((c) => c.cachedTokens), this.promptTokens);
      const usage = usageOf(this.promptTokens, completion, cached);
      out.push(sseEvent(this.kind === 'completions' ? completionUsageChunk(this.meta, usage) : chatUsageChunk(this.meta, usage)));
    }
    out.push(SSE_DONE);
    return out;
  }
}

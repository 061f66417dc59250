/**
 * The events a ToolCallParser yields for a choice's output, shaped as OpenAI's streamed `delta.tool_calls`:
 * content text, or a tool-call delta. Each call opens with a delta carrying its index, id, type and function
 * name (arguments ""), then deltas of argument fragments.
 */
import type { FinishReason } from '../generation/generation.types';

export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export type ToolEvent = { readonly content: string } | { readonly call: ToolCallDelta };

export interface ToolCallParser {
  push(text: string): ToolEvent[];
  /** The output ended: whatever is held back. */
  finish(): ToolEvent[];
  /** Calls opened so far. */
  readonly calls: number;
  /**
   * The output so far ends inside a call: guided JSON not yet closed (cut there by a stop string, a stop token
   * or max_tokens, its arguments unparseable). A Hermes block left open still counts as a call (as in vLLM).
   */
  readonly truncated: boolean;
}

/**
 * The one rule for finish_reason `tool_calls` (HTTP) / FINISH_REASON_TOOL_CALLS (gRPC): the choice made calls,
 * none of them cut short, and it stopped by itself. Otherwise the worker's reason stands (stop or length).
 */
export function finishesWithToolCalls(parser: Pick<ToolCallParser, 'calls' | 'truncated'>, reason: FinishReason | null): boolean {
  return reason === 'stop' && parser.calls > 0 && !parser.truncated;
}

/** The opening delta of call `index` and, when there are any, its arguments. */
export function callEvents(index: number, id: string, name: string, args: string): ToolEvent[] {
  const open: ToolEvent = { call: { index, id, type: 'function', function: { name, arguments: '' } } };
  return args === '' ? [open] : [open, { call: { index, function: { arguments: args } } }];
}

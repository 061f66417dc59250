/**
 * The events a ToolCallParser yields for a choice's output, shaped as OpenAI's streamed `delta.tool_calls`:
 * content text, or a tool-call delta. Each call opens with a delta carrying its index, id, type and function
 * name (arguments ""), then deltas of argument fragments.
 */

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
}

/** The opening delta of call `index` and, when there are any, its arguments. */
export function callEvents(index: number, id: string, name: string, args: string): ToolEvent[] {
  const open: ToolEvent = { call: { index, id, type: 'function', function: { name, arguments: '' } } };
  return args === '' ? [open] : [open, { call: { index, function: { arguments: args } } }];
}

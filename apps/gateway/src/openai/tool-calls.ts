/**
 * Tool calls in the model's output (pure). A ToolCallParser (tool-events.ts) is fed a choice's text deltas and
 * yields content and `delta.tool_calls` events; a non-streamed response assembles the same events
 * (assembleToolOutput), so a stream reassembles to the same message.
 *
 * `auto` output is parsed for Hermes `<tool_call>` blocks (hermes-calls.ts); the guided output of `required`
 * and a named function is a JSON call (or list of calls) scanned as it arrives (guided-calls.ts).
 */
import { randomBytes } from 'node:crypto';
import { GuidedCallParser } from './guided-calls';
import { HermesCallParser } from './hermes-calls';
import type { ToolCallParser } from './tool-events';
import type { ToolPlan } from './tools';

/** A tool call of a response message, as OpenAI returns it. */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** OpenAI-style call id: `call_` and 24 hex digits. */
export function newCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

export function toolCallParser(plan: ToolPlan, newId: () => string = newCallId): ToolCallParser {
  if (plan.mode === 'auto') return new HermesCallParser(new Set(plan.tools.map((t) => t.name)), newId);
  return new GuidedCallParser(plan.mode === 'named' ? 'object' : 'array', newId);
}

/**
 * A whole output's message: content and tool_calls from the parser's events. Without calls the content is
 * the text as the parser passed it; with calls, the text around them trimmed, or null when there is none.
 */
export function assembleToolOutput(parser: ToolCallParser, text: string): { content: string | null; toolCalls: ToolCall[] } {
  let content = '';
  const calls: ToolCall[] = [];
  for (const e of [...parser.push(text), ...parser.finish()]) {
    if ('content' in e) {
      content += e.content;
      continue;
    }
    const d = e.call;
    const call = calls[d.index] ?? (calls[d.index] = { id: d.id ?? '', type: 'function', function: { name: d.function.name ?? '', arguments: '' } });
    call.function.arguments += d.function.arguments;
  }
  if (calls.length === 0) return { content, toolCalls: [] };
  const trimmed = content.trim();
  return { content: trimmed === '' ? null : trimmed, toolCalls: calls };
}

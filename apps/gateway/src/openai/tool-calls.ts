/**
 * Tool calls in the model's output (pure). A ToolCallParser (tool-events.ts) is fed a choice's text deltas and
 * yields content and `delta.tool_calls` events; a non-streamed response assembles the same events
 * (assembleToolOutput), so a stream reassembles to the same message.
 *
 * `auto` output is parsed in the served model's format (tool-format.ts): Hermes `<tool_call>` blocks
 * (hermes-calls.ts) or calls where the output starts, llama3_json / mistral / pythonic (json-calls.ts); the guided
 * output of `required` and a named function is a JSON call (or list of calls) in every format, scanned as it
 * arrives (guided-calls.ts).
 */
import { randomBytes } from 'node:crypto';
import { GuidedCallParser } from './guided-calls';
import { HermesCallParser } from './hermes-calls';
import { JsonCallParser, LLAMA3_JSON, MISTRAL, PYTHONIC } from './json-calls';
import { argumentsKey } from './tool-format';
import type { FinishReason } from '../generation/generation.types';
import { finishesWithToolCalls, type ToolCallParser } from './tool-events';
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

/** The parser of the plan's output: the format's (tool-format.ts) for `auto`, the guided call's otherwise. */
export function toolCallParser(plan: ToolPlan, newId: () => string = newCallId): ToolCallParser {
  if (plan.mode !== 'auto') return new GuidedCallParser(plan.mode === 'named' ? 'object' : 'array', newId, argumentsKey(plan.support));
  const names = new Set(plan.tools.map((t) => t.name));
  switch (plan.support?.parser ?? 'hermes') {
    case 'llama3_json':
      return new JsonCallParser(LLAMA3_JSON, names, newId);
    case 'mistral':
      return new JsonCallParser(MISTRAL, names, newId);
    case 'pythonic':
      return new JsonCallParser(PYTHONIC, names, newId);
    case 'hermes':
      return new HermesCallParser(names, newId);
  }
}

/** A whole output's message, and whether it finishes with `tool_calls` (finishesWithToolCalls). */
export interface ToolOutput {
  content: string | null;
  toolCalls: ToolCall[];
  toolCallsFinish: boolean;
}

/**
 * A whole output's message from the parser's events, exactly what its stream reassembles to: the content is
 * the content events joined (the parser drops whitespace next to calls), null when there are calls and no
 * content.
 */
export function assembleToolOutput(parser: ToolCallParser, text: string, finish: FinishReason | null): ToolOutput {
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
  const toolCallsFinish = finishesWithToolCalls(parser, finish);
  return { content: calls.length > 0 && content === '' ? null : content, toolCalls: calls, toolCallsFinish };
}

/**
 * Tool-call history in chat messages (pure validation, OpenAI's rules): an assistant message may carry
 * `tool_calls` ([{id, type: "function", function: {name, arguments: JSON text}}], its content may then be null);
 * a `tool` message carries the `tool_call_id` of a call an earlier assistant message made. Errors name the
 * field, e.g. `messages[2].tool_call_id`.
 */
import { InlaidError } from '../common/inlaid-error';
import { isObject, isPresent } from './body-fields';
import { checkDepth } from './json-depth';
import type { HistoryCall } from './tool-prompt';

type Body = Record<string, unknown>;

function parseCall(raw: unknown, param: string): HistoryCall {
  if (!isObject(raw) || typeof raw['id'] !== 'string' || raw['id'] === '') {
    throw InlaidError.invalid(`'${param}.id' must be a non-empty string.`, `${param}.id`);
  }
  if (isPresent(raw['type']) && raw['type'] !== 'function') throw InlaidError.invalid(`'${param}.type' must be "function".`, `${param}.type`);
  const fn = raw['function'];
  if (!isObject(fn) || typeof fn['name'] !== 'string' || fn['name'] === '') {
    throw InlaidError.invalid(`'${param}.function.name' must be a non-empty string.`, `${param}.function.name`);
  }
  if (typeof fn['arguments'] !== 'string') {
    throw InlaidError.invalid(`'${param}.function.arguments' must be a string (the arguments as JSON).`, `${param}.function.arguments`);
  }
  checkDepth(parsedOrText(fn['arguments']), `${param}.function.arguments`);
  return { id: raw['id'], name: fn['name'], arguments: fn['arguments'] };
}

/** The arguments as JSON (the prompt re-serializes them recursively, tool-prompt.ts), or the text when they are
 * not JSON (rendered as the text it is). */
function parsedOrText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Tool fields of message `i` (role already validated). `callIds` holds the ids of earlier calls; this adds its own. */
export function parseTurnTools(msg: Body, i: number, role: string, callIds: Set<string>): { toolCalls?: HistoryCall[]; toolCallId?: string } {
  const param = `messages[${i}]`;
  const calls = msg['tool_calls'];
  if (isPresent(calls)) {
    if (role !== 'assistant') throw InlaidError.invalid(`'${param}.tool_calls' is only allowed on assistant messages.`, `${param}.tool_calls`);
    if (!Array.isArray(calls)) throw InlaidError.invalid(`'${param}.tool_calls' must be a list.`, `${param}.tool_calls`);
    const toolCalls = calls.map((c: unknown, j) => parseCall(c, `${param}.tool_calls[${j}]`));
    toolCalls.forEach((c) => callIds.add(c.id));
    return toolCalls.length > 0 ? { toolCalls } : {};
  }
  if (role !== 'tool') return {};
  const id = msg['tool_call_id'];
  if (typeof id !== 'string' || id === '') {
    throw InlaidError.invalid(`'${param}.tool_call_id' must be a non-empty string.`, `${param}.tool_call_id`);
  }
  if (!callIds.has(id)) {
    throw InlaidError.invalid(
      `'${param}.tool_call_id' (${id}) does not answer a call of an earlier assistant message's 'tool_calls'.`,
      `${param}.tool_call_id`,
    );
  }
  return { toolCallId: id };
}

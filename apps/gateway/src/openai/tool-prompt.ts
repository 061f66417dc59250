/**
 * Tools and tool-call history in the chat prompt (pure). When the model's chat template renders tools itself
 * (tool-format.ts), the worker passes them to it (renderChat keeps the messages' tool fields, nativeTools gives
 * the tools). Otherwise the worker applies the template to plain role / content messages; SmolLM2-135M-Instruct's
 * template (ChatML) has no tool support, so the gateway renders tools the Hermes way (NousResearch Hermes 2 Pro, Qwen2.5), which any template with system / user / assistant
 * roles can carry:
 *
 * - the offered tools go at the end of the system message (one is added first when the request has none):
 *   a `# Tools` section listing each tool as `{"type": "function", "function": {...}}` inside `<tools></tools>`
 *   and asking for each call as `<tool_call>\n{"name": <name>, "arguments": <object>}\n</tool_call>`;
 * - an assistant message's `tool_calls` become such `<tool_call>` blocks after its content;
 * - `tool` messages become a user message, each result inside `<tool_response>\n...\n</tool_response>`
 *   (consecutive results share one user message).
 *
 * JSON is written with Python's json.dumps separators (", " and ": "), as the Hermes templates and the worker's
 * structured outputs do.
 */
import type { common } from '@inlaid/proto';
import { HERMES_FALLBACK, type ToolSupport } from './tool-format';
import type { ToolFunction, ToolPlan } from './tools';

/** A call of an assistant message in the history. `arguments` is the JSON text the client sent. */
export interface HistoryCall {
  readonly id: string;
  readonly name: string;
  readonly arguments: string;
}

/** One validated chat message, with its tool fields. */
export interface ChatTurn {
  readonly role: string;
  readonly content: string;
  readonly toolCalls?: readonly HistoryCall[];
  readonly toolCallId?: string;
}

/**
 * JSON as Python's json.dumps writes it by default: ", " between items, ": " after keys, non-ASCII kept.
 * Recursive: its inputs (tool parameters, history arguments) are bounded by MAX_JSON_DEPTH at validation
 * (tools.ts, tool-history.ts; json-depth.ts).
 */
export function pyJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pyJson).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}: ${pyJson(v)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function toolsSystemText(tools: readonly ToolFunction[], parallel: boolean): string {
  const list = tools.map((t) => pyJson({ type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters } }));
  return [
    '# Tools',
    '',
    `You may call ${parallel ? 'one or more functions' : 'one function'} to assist with the user query.`,
    '',
    'You are provided with function signatures within <tools></tools> XML tags:',
    '<tools>',
    ...list,
    '</tools>',
    '',
    'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:',
    '<tool_call>',
    '{"name": <function-name>, "arguments": <args-json-object>}',
    '</tool_call>',
  ].join('\n');
}

function parsedArguments(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export function toolCallBlock(name: string, args: unknown): string {
  return `<tool_call>\n${pyJson({ name, arguments: args })}\n</tool_call>`;
}

function assistantContent(turn: ChatTurn): string {
  const blocks = (turn.toolCalls ?? []).map((c) => toolCallBlock(c.name, parsedArguments(c.arguments)));
  return [turn.content, ...blocks].filter((s) => s !== '').join('\n');
}

/**
 * The messages the worker's chat template gets: tools offered per `plan` (undefined = none), history rendered.
 * When the template renders tools itself (`support.native`, tool-format.ts), the messages keep their tool_calls /
 * tool_call_id as they are and the tools go separately (nativeTools).
 */
export function renderChat(turns: readonly ChatTurn[], plan: ToolPlan | undefined, support: ToolSupport = HERMES_FALLBACK): common.ChatMessage[] {
  if (support.native) return turns.map(nativeMessage);
  const out: common.ChatMessage[] = [];
  let toolResults: string[] = [];
  const flushResults = () => {
    if (toolResults.length > 0) out.push({ role: 'user', content: toolResults.join('\n') });
    toolResults = [];
  };
  for (const turn of turns) {
    if (turn.role === 'tool') {
      toolResults.push(`<tool_response>\n${turn.content}\n</tool_response>`);
      continue;
    }
    flushResults();
    out.push({ role: turn.role, content: turn.role === 'assistant' ? assistantContent(turn) : turn.content });
  }
  flushResults();
  if (plan === undefined) return out;
  const tools = toolsSystemText(plan.tools, plan.parallel);
  if (out[0]?.role === 'system') {
    const first = out[0];
    return [{ role: 'system', content: first.content === '' ? tools : `${first.content}\n\n${tools}` }, ...out.slice(1)];
  }
  return [{ role: 'system', content: tools }, ...out];
}

function nativeMessage(turn: ChatTurn): common.ChatMessage {
  return {
    role: turn.role,
    content: turn.content,
    ...(turn.toolCalls !== undefined ? { toolCalls: { calls: turn.toolCalls.map((c) => ({ id: c.id, name: c.name, arguments: c.arguments })) } } : {}),
    ...(turn.toolCallId !== undefined ? { toolCallId: turn.toolCallId } : {}),
  };
}

/**
 * PrepareRequest.tools for a template that renders tools itself: the offered tools as the OpenAI list
 * (`[{"type": "function", "function": {name, description, parameters}}]`, JSON text); "" when none are offered
 * or the gateway renders them (Hermes fallback).
 */
/** Characters of the tool calls in `messages` (their names and arguments), counted toward the prompt's bound. */
export function toolCallChars(messages: readonly common.ChatMessage[]): number {
  return messages.reduce((n, m) => n + (m.toolCalls?.calls.reduce((k, c) => k + c.name.length + c.arguments.length, 0) ?? 0), 0);
}

export function nativeTools(plan: ToolPlan | undefined, support: ToolSupport = HERMES_FALLBACK): string {
  if (plan === undefined || !support.native) return '';
  return JSON.stringify(plan.tools.map((t) => ({ type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters } })));
}

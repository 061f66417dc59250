/**
 * How the served model takes tools and writes its calls (pure). Each worker reports it in WorkerInfo
 * (`tool_call_parser`, `native_tools`; the worker reads it from its chat template, or --tool-call-parser /
 * INLAID_WORKER_TOOL_CALL_PARSER sets it):
 *
 * - native: the chat template renders the tools and the tool-call history itself (the worker passes them to
 *   apply_chat_template; the gateway sends the tools as PrepareRequest.tools and the messages with their
 *   tool_calls / tool_call_id); otherwise the gateway writes them into the messages in Hermes format
 *   (tool-prompt.ts), and the parser is `hermes`;
 * - parser: how `auto` output is read (tool-calls.ts) and the shape of the guided call of `required` / a named
 *   function (tool-schema.ts): `hermes` (`<tool_call>` blocks), `llama3_json` (`{"name", "parameters"}`
 *   objects), `mistral` (`[TOOL_CALLS]` and a list of `{"name", "arguments"}`, or `[TOOL_CALLS]name[ARGS]{...}`),
 *   `pythonic` (a Python list of calls, `[name(key=value)]`).
 */
import type { worker } from '@inlaid/proto';

export const TOOL_CALL_PARSERS = ['hermes', 'llama3_json', 'mistral', 'pythonic'] as const;
export type ToolCallFormat = (typeof TOOL_CALL_PARSERS)[number];

export interface ToolSupport {
  readonly parser: ToolCallFormat;
  readonly native: boolean;
}

/** A template without tool support (SmolLM2): the gateway's Hermes rendering and parser. */
export const HERMES_FALLBACK: ToolSupport = { parser: 'hermes', native: false };

function isParser(name: string): name is ToolCallFormat {
  return (TOOL_CALL_PARSERS as readonly string[]).includes(name);
}

/** A worker's report; anything this gateway cannot parse (an older worker: "", or an unknown name) falls back. */
export function toolSupportOf(info: Pick<worker.WorkerInfo, 'toolCallParser' | 'nativeTools'> | null | undefined): ToolSupport {
  if (info === null || info === undefined || !info.nativeTools || !isParser(info.toolCallParser)) return HERMES_FALLBACK;
  return { parser: info.toolCallParser, native: true };
}

/** The key of a call's arguments in the format (Llama 3.1 writes "parameters"). */
export function argumentsKey(support: ToolSupport | undefined): 'arguments' | 'parameters' {
  return support?.parser === 'llama3_json' ? 'parameters' : 'arguments';
}

/**
 * The JSON schema that constrains the output of `tool_choice: "required"` or a named function (pure): the
 * structured-outputs path (response-format.ts, the worker's xgrammar) then guarantees a valid call. A call is
 * the call object of the served model's format (tool-format.ts), `{"name": <const>, "arguments": <the tool's
 * parameters schema>}` (Hermes, Mistral, pythonic; llama3_json's key is "parameters", as Llama 3.1 writes and its template
 * renders past calls); a named function gets that one object, "required" a list of one or more calls (exactly
 * one when `parallel_tool_calls` is false; Mistral's own call list), each any of the tools. The format's
 * wrapper (`<tool_call>` tags, the `[TOOL_CALLS]` / `<|python_tag|>` special tokens) is not generated, nor
 * Mistral's `name[ARGS]{...}` or a pythonic list: the guided output is the bare JSON, read by guided-calls.ts.
 */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';
import { MAX_RESPONSE_FORMAT_CHARS, type ResponseFormat } from './response-format';
import { argumentsKey } from './tool-format';
import type { ToolFunction, ToolPlan } from './tools';

export function callSchema(tool: ToolFunction, argsKey: 'arguments' | 'parameters' = 'arguments'): Record<string, unknown> {
  return {
    type: 'object',
    properties: { name: { type: 'string', const: tool.name }, [argsKey]: tool.parameters },
    required: ['name', argsKey],
    additionalProperties: false,
  };
}

/** The schema of the output, or undefined for `auto` (free text, parsed afterwards). */
export function toolSchema(plan: ToolPlan): Record<string, unknown> | undefined {
  if (plan.mode === 'auto') return undefined;
  // parseToolPlan (tools.ts) refuses a tool_choice naming a function that is not in tools.
  const key = argumentsKey(plan.support);
  if (plan.mode === 'named') return callSchema(plan.tools.find((t) => t.name === plan.named) as ToolFunction, key);
  const calls = plan.tools.map((t) => callSchema(t, key));
  return {
    type: 'array',
    items: calls.length === 1 ? calls[0] : { anyOf: calls },
    minItems: 1,
    ...(plan.parallel ? {} : { maxItems: 1 }),
  };
}

/** The plan's constraint as SamplingParams.responseFormat (a JSON schema the worker compiles), if any. */
export function toolResponseFormat(plan: ToolPlan): ResponseFormat {
  const schema = toolSchema(plan);
  if (schema === undefined) return undefined;
  const text = JSON.stringify(schema);
  if (text.length > MAX_RESPONSE_FORMAT_CHARS) {
    throw InlaidError.invalid(`The tools' call schema has ${text.length} characters; at most ${MAX_RESPONSE_FORMAT_CHARS} are accepted.`, 'tools');
  }
  return { $case: 'jsonSchema', value: text };
}

/**
 * SamplingParams.keepToolMarkers for the plan: `auto` with the mistral or pythonic format, whose markers
 * (`[TOOL_CALLS]`, `[ARGS]`, `<|python_start|>`, ...) are special tokens the worker otherwise drops from the text
 * (vLLM's parsers of these formats set skip_special_tokens=False). The worker keeps only those markers (every other
 * special token is still dropped), so json-calls.ts finds calls after them, after prose too.
 */
export function keepsToolMarkers(plan: ToolPlan): boolean {
  const parser = plan.support?.parser;
  return plan.mode === 'auto' && (parser === 'mistral' || parser === 'pythonic');
}

/**
 * The worker refuses a schema it cannot compile naming response_format; for a call schema the client wrote
 * `tools`, so the refusal names that instead. Other errors pass through.
 */
export function toolsRefusal(err: unknown, plan: ToolPlan): unknown {
  if (plan.mode === 'auto' || !(err instanceof InlaidError) || err.status !== status.INVALID_ARGUMENT || err.details.param !== 'response_format') return err;
  const why = err.message.replace(/^response_format:\s*/, '');
  return InlaidError.invalid(`The call schema built from 'tools' (their parameters) was refused: ${why}`, 'tools');
}

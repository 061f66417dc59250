/**
 * OpenAI tool (function) calling on chat completions: validation of `tools`, `tool_choice` and
 * `parallel_tool_calls` into a ToolPlan (pure). Every rejection is an InlaidError(INVALID_ARGUMENT) naming the
 * parameter, as OpenAI does (e.g. `tool_choice` naming a function that is not in `tools`).
 *
 * How a plan is served: `none` (or no tools) offers no tools and returns text; `auto` offers them in the prompt
 * and parses the model's calls in its format (tool-format.ts, tool-calls.ts); `required` and a named function
 * offer them and constrain the output with a JSON schema built from the tools in that format's call shape
 * (tool-schema.ts), so the output is always a call.
 */
import { InlaidError } from '../common/inlaid-error';
import { checkDepth, MAX_JSON_DEPTH } from './json-depth';
import { checkJsonSchema } from './json-schema-check';
import { isObject, isPresent } from './body-fields';
import { MAX_RESPONSE_FORMAT_CHARS } from './response-format';
import type { ToolSupport } from './tool-format';

/** OpenAI's limit on the tools of one request. */
export const MAX_TOOLS = 128;
/** OpenAI's function names: letters, digits, '_' and '-', at most 64. */
export const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface ToolFunction {
  readonly name: string;
  readonly description?: string;
  /**
   * The parameters' JSON Schema: always `"type": "object"` (added when the client left `type` out, so the
   * guided arguments of a required / named call are an object, not any JSON value); an object schema with no
   * properties when the tool has none.
   */
  readonly parameters: Record<string, unknown>;
}

export type ToolChoiceMode = 'auto' | 'required' | 'named';

/** Tools offered to the model; absent for `tool_choice: "none"` or no tools. */
export interface ToolPlan {
  readonly tools: readonly ToolFunction[];
  readonly mode: ToolChoiceMode;
  /** The function `tool_choice` names (mode `named`). */
  readonly named?: string;
  /** `parallel_tool_calls` (default true): more than one call per response allowed. */
  readonly parallel: boolean;
  /** How the served model takes tools and writes calls (tool-format.ts); absent: the Hermes fallback. */
  readonly support?: ToolSupport;
}

type Body = Record<string, unknown>;

const NO_PARAMETERS: Record<string, unknown> = { type: 'object', properties: {} };


/** The validated parameters (or none) as an object schema: `"type": "object"` first when it was left out. */
function objectSchema(parameters: unknown): Record<string, unknown> {
  if (!isObject(parameters)) return NO_PARAMETERS;
  return parameters['type'] === 'object' ? parameters : Object.assign({ type: 'object' }, parameters, { type: 'object' });
}

function parseTool(raw: unknown, i: number): ToolFunction {
  const param = `tools[${i}]`;
  if (!isObject(raw) || raw['type'] !== 'function') throw InlaidError.invalid(`'${param}.type' must be "function".`, param);
  const fn = raw['function'];
  if (!isObject(fn)) throw InlaidError.invalid(`'${param}.function' must be an object with a 'name'.`, `${param}.function`);
  const name = fn['name'];
  if (typeof name !== 'string' || !TOOL_NAME.test(name)) {
    throw InlaidError.invalid(`'${param}.function.name' must be 1-64 letters, digits, '_' or '-'.`, `${param}.function.name`);
  }
  const description = fn['description'];
  if (isPresent(description) && typeof description !== 'string') {
    throw InlaidError.invalid(`'${param}.function.description' must be a string.`, `${param}.function.description`);
  }
  const parameters = fn['parameters'];
  if (isPresent(parameters) && !isObject(parameters)) {
    throw InlaidError.invalid(`'${param}.function.parameters' must be a JSON Schema object.`, `${param}.function.parameters`);
  }
  if (isObject(parameters) && isPresent(parameters['type']) && parameters['type'] !== 'object') {
    throw InlaidError.invalid(`'${param}.function.parameters' must describe an object ("type": "object").`, `${param}.function.parameters`);
  }
  checkDepth(parameters, `${param}.function.parameters`); // before anything walks or serializes it
  checkDepth(raw, param, MAX_JSON_DEPTH + 2, MAX_JSON_DEPTH); // its other fields (raw holds parameters 2 levels down)
  if (isObject(parameters)) checkJsonSchema(parameters, `${param}.function.parameters`);
  if (isPresent(fn['strict']) && typeof fn['strict'] !== 'boolean') {
    throw InlaidError.invalid(`'${param}.function.strict' must be a boolean.`, `${param}.function.strict`);
  }
  return {
    name,
    ...(typeof description === 'string' ? { description } : {}),
    parameters: objectSchema(parameters),
  };
}

function parseTools(body: Body): ToolFunction[] | undefined {
  const raw = body['tools'];
  if (!isPresent(raw)) return undefined;
  if (!Array.isArray(raw) || raw.length === 0) throw InlaidError.invalid("'tools' must be a non-empty list.", 'tools');
  if (raw.length > MAX_TOOLS) throw InlaidError.invalid(`'tools' accepts at most ${MAX_TOOLS} functions.`, 'tools');
  const tools = raw.map(parseTool);
  const seen = new Set<string>();
  for (const t of tools) {
    if (seen.has(t.name)) throw InlaidError.invalid(`'tools' names the function '${t.name}' more than once.`, 'tools');
    seen.add(t.name);
  }
  const chars = JSON.stringify(raw).length;
  if (chars > MAX_RESPONSE_FORMAT_CHARS) {
    throw InlaidError.invalid(`'tools' has ${chars} characters; at most ${MAX_RESPONSE_FORMAT_CHARS} are accepted.`, 'tools');
  }
  return tools;
}

type Choice = { mode: 'none' | ToolChoiceMode; named?: string };

function parseChoice(body: Body, tools: readonly ToolFunction[] | undefined): Choice {
  const raw = body['tool_choice'];
  if (!isPresent(raw)) return { mode: tools === undefined ? 'none' : 'auto' };
  if (raw === 'none') return { mode: 'none' };
  if (tools === undefined) throw InlaidError.invalid("'tool_choice' is only allowed when 'tools' are specified.", 'tool_choice');
  if (raw === 'auto' || raw === 'required') return { mode: raw };
  if (isObject(raw) && raw['type'] === 'function' && isObject(raw['function']) && typeof raw['function']['name'] === 'string') {
    const name = raw['function']['name'];
    if (!tools.some((t) => t.name === name)) {
      throw InlaidError.invalid(`'tool_choice' names the function '${name}', which is not in 'tools'.`, 'tool_choice');
    }
    return { mode: 'named', named: name };
  }
  throw InlaidError.invalid(
    '\'tool_choice\' must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
    'tool_choice',
  );
}

/**
 * `tools`, `tool_choice` and `parallel_tool_calls` of a chat request; undefined when no tools are offered.
 * `support`: the served model's (tool-format.ts), kept in the plan.
 */
export function parseToolPlan(body: Body, support?: ToolSupport): ToolPlan | undefined {
  const tools = parseTools(body);
  const choice = parseChoice(body, tools);
  const parallel = body['parallel_tool_calls'];
  if (isPresent(parallel) && typeof parallel !== 'boolean') {
    throw InlaidError.invalid("'parallel_tool_calls' must be a boolean.", 'parallel_tool_calls');
  }
  if (tools === undefined || choice.mode === 'none') return undefined;
  return {
    tools,
    mode: choice.mode,
    ...(choice.named !== undefined ? { named: choice.named } : {}),
    parallel: parallel !== false,
    ...(support !== undefined ? { support } : {}),
  };
}

/**
 * Tool calling on gRPC Generate (pure): GenerateRequest.tools and the messages' tool_calls / tool_call_id are
 * validated with the OpenAI edge's rules (openai/tools.ts, openai/tool-history.ts; INVALID_ARGUMENT names the
 * proto field, e.g. `tools.functions[0].parameters`, `tools.function`), rendered into the prompt the same way
 * (openai/tool-prompt.ts) and, for "required" or a named function, constrain the output (openai/tool-schema.ts).
 * GrpcToolStream turns a choice's deltas into `text` (content only) and `tool_calls` deltas.
 */
import { common, inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { grpcMessages } from './generate-request';
import type { GenerationDelta, GenerationInput } from '../generation/generation.types';
import { checkPromptChars } from '../limits/input-bounds';
import { toolCallParser } from '../openai/tool-calls';
import { finishesWithToolCalls, type ToolCallParser } from '../openai/tool-events';
import { parseTurnTools } from '../openai/tool-history';
import { HERMES_FALLBACK, type ToolSupport } from '../openai/tool-format';
import { nativeTools, renderChat, toolCallChars, type ChatTurn } from '../openai/tool-prompt';
import { keepsToolMarkers, toolResponseFormat } from '../openai/tool-schema';
import { parseToolPlan, type ToolPlan } from '../openai/tools';

/** OpenAI parameter names (as the shared validators name them) to GenerateRequest's fields. */
export function protoParam(param: string | undefined): string | undefined {
  if (param === undefined) return undefined;
  if (param === 'tool_choice') return 'tools.function';
  if (param === 'parallel_tool_calls') return 'tools.parallel_tool_calls';
  return param
    .replace(/^tools\[(\d+)\](?:\.function)?/, 'tools.functions[$1]')
    .replace(/^tools$/, 'tools.functions')
    .replace(/\.tool_calls\[(\d+)\](?:\.function)?/, '.tool_calls.calls[$1]');
}

function renamed<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof InlaidError)) throw err;
    throw InlaidError.invalid(err.message, protoParam(err.details.param));
  }
}

function parameters(f: inference.ToolFunction, i: number): unknown {
  if (f.parameters === '') return undefined;
  try {
    return JSON.parse(f.parameters) as unknown;
  } catch {
    throw InlaidError.invalid(`tools.functions[${i}].parameters must be JSON text of a JSON Schema object.`, `tools.functions[${i}].parameters`);
  }
}

function toolChoice(tools: inference.Tools): unknown {
  if (tools.function !== '') {
    if (tools.choice !== '' && tools.choice !== 'required') throw InlaidError.invalid('tools.choice must be "" or "required" when tools.function is set.', 'tools.choice');
    return { type: 'function', function: { name: tools.function } };
  }
  if (tools.choice === '') return undefined;
  if (!['auto', 'none', 'required'].includes(tools.choice)) throw InlaidError.invalid('tools.choice must be "", "auto", "none" or "required".', 'tools.choice');
  return tools.choice;
}

function planOf(tools: inference.Tools, support: ToolSupport): ToolPlan | undefined {
  const body = {
    tools: tools.functions.map((f, i) => ({ type: 'function', function: { name: f.name, description: f.description || undefined, parameters: parameters(f, i) } })),
    tool_choice: toolChoice(tools),
    parallel_tool_calls: tools.parallelToolCalls,
  };
  return renamed(() => parseToolPlan(body, support));
}

function turnsOf(messages: readonly common.ChatMessage[]): ChatTurn[] {
  const callIds = new Set<string>();
  return messages.map((m, i) => {
    const msg = {
      tool_calls: m.toolCalls?.calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
      tool_call_id: m.toolCallId,
    };
    return { role: m.role, content: m.content, ...renamed(() => parseTurnTools(msg, i, m.role, callIds)) };
  });
}

/**
 * The request with its tools applied, and the plan its output is parsed with (undefined: plain text).
 * `supportOf`: the served model's tool support (openai/tool-format.ts), asked only when tools are involved.
 */
export function withGrpcTools(
  req: inference.GenerateRequest,
  input: GenerationInput,
  supportOf: () => ToolSupport = () => HERMES_FALLBACK,
): { input: GenerationInput; plan?: ToolPlan } {
  const history = req.messages.some((m) => m.toolCalls !== undefined || m.toolCallId !== undefined);
  if (req.tools === undefined && !history) return { input };
  if (req.messages.length === 0) throw InlaidError.invalid('tools need messages (chat), not a prompt.', 'tools');
  const support = supportOf();
  const plan = req.tools === undefined ? undefined : planOf(req.tools, support);
  const messages = renderChat(turnsOf(grpcMessages(req.messages)), plan, support); // developer -> system, as without tools
  const tools = nativeTools(plan, support);
  checkPromptChars(messages.reduce((n, m) => n + m.content.length + m.role.length, 0) + toolCallChars(messages) + tools.length, 'prompt');
  const format = plan === undefined ? undefined : renamed(() => toolResponseFormat(plan));
  if (format !== undefined && input.sampling.responseFormat !== undefined) {
    throw InlaidError.invalid('"required" or a named tools.function cannot be combined with sampling.response_format.', 'tools.function');
  }
  const markers = plan !== undefined && keepsToolMarkers(plan) ? { keepToolMarkers: true } : {};
  const sampling = format === undefined ? { ...input.sampling, ...markers } : { ...input.sampling, responseFormat: format };
  return { input: { ...input, messages, sampling, ...(tools !== '' ? { tools } : {}) }, ...(plan !== undefined ? { plan } : {}) };
}

/** The fields of a GenerateResponse that tool calling changes. */
export interface ToolFields {
  text: string;
  toolCalls: inference.ToolCallDelta[];
  /** Set on the last delta: FINISH_REASON_TOOL_CALLS per finishesWithToolCalls (openai/tool-events.ts). */
  finishReason?: common.FinishReason;
}

/** One choice's deltas through its tool-call parser. */
export class GrpcToolStream {
  private readonly parser: ToolCallParser;

  constructor(plan: ToolPlan) {
    this.parser = toolCallParser(plan);
  }

  fields(d: GenerationDelta): ToolFields {
    const events = d.text !== '' ? this.parser.push(d.text) : [];
    if (d.finishReason !== null) events.push(...this.parser.finish());
    const out: ToolFields = { text: '', toolCalls: [] };
    for (const e of events) {
      if ('content' in e) out.text += e.content;
      else out.toolCalls.push({ index: e.call.index, id: e.call.id ?? '', name: e.call.function.name ?? '', arguments: e.call.function.arguments });
    }
    if (finishesWithToolCalls(this.parser, d.finishReason)) out.finishReason = common.FinishReason.FINISH_REASON_TOOL_CALLS;
    return out;
  }
}

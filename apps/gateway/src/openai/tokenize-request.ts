/**
 * vLLM's POST /tokenize and POST /detokenize bodies (pure). Tokenize takes `{model, prompt, add_special_tokens,
 * return_token_strs}` or `{model, messages, add_generation_prompt, add_special_tokens, tools, tool_choice,
 * return_token_strs}`; the messages are rendered exactly as chat completions renders them (request-validation.ts
 * parseChatPrompt: the Hermes tool prompt, or the tools for a template that renders them itself, with chat
 * completions' refusals), so the ids are those generation uses. `add_special_tokens` left out is vLLM's default,
 * applied by the worker: true for a prompt, false for messages (the template holds them; true adds them on top).
 * Tools need messages: a prompt with `tools` or `tool_choice` is refused (as gRPC Tokenize and Generate refuse it).
 * `model` may be left out (the base model). Every rejection is a 400 naming the field.
 */
import type { common, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { BOUNDS, checkModelId, checkPromptChars } from '../limits/input-bounds';
import { isObject, isPresent, optBoolean } from './body-fields';
import { parseChatPrompt } from './request-validation';
import type { ToolSupport } from './tool-format';

type Body = Record<string, unknown>;

/** Most ids one /detokenize takes (as many as the longest prompt has characters). */
export const MAX_DETOKENIZE_IDS = BOUNDS.promptChars;
const MAX_TOKEN_ID = 0xffffffff;

function asObject(raw: unknown): Body {
  if (!isObject(raw)) throw InlaidError.invalid('The request body must be a JSON object.');
  return raw;
}

/** The body's `model`, or '' when it is left out (the caller fills in the base model). */
export function parseOptionalModel(body: Body): string {
  const model = body['model'];
  if (!isPresent(model)) return '';
  if (typeof model !== 'string' || model.trim() === '') throw InlaidError.invalid("'model' must be a non-empty string.", 'model');
  checkModelId(model);
  return model;
}

function refuseTrue(body: Body, name: string, why: string): void {
  if (optBoolean(body, name) === true) throw InlaidError.invalid(`'${name}' is not supported: ${why}`, name);
}

/** The worker's TokenizeRequest for a /tokenize body; `support` is the model's tool support. */
export function parseTokenizeRequest(raw: unknown, supportOf: (model: string) => ToolSupport): worker.TokenizeRequest {
  const body = asObject(raw);
  const model = parseOptionalModel(body);
  const returnTokenStrs = optBoolean(body, 'return_token_strs') ?? false;
  const hasMessages = isPresent(body['messages']);
  if (hasMessages === isPresent(body['prompt'])) throw InlaidError.invalid("Give either 'prompt' or 'messages'.", 'prompt');
  const addSpecialTokens = optBoolean(body, 'add_special_tokens');
  if (!hasMessages) {
    const prompt = body['prompt'];
    if (typeof prompt !== 'string' || prompt === '') throw InlaidError.invalid("'prompt' must be a non-empty string.", 'prompt');
    checkPromptChars(prompt.length, 'prompt');
    for (const name of ['tools', 'tool_choice']) {
      if (isPresent(body[name])) throw InlaidError.invalid(`'${name}' needs 'messages' (chat), not a 'prompt'.`, name);
    }
    return { model, prompt, messages: [], tools: '', addSpecialTokens, returnTokenStrs };
  }
  refuseTrue(body, 'continue_final_message', 'the prompt always ends with a whole message.');
  if (isPresent(body['chat_template'])) throw InlaidError.invalid("'chat_template' is not supported: the model's own template is used.", 'chat_template');
  const addGenerationPrompt = optBoolean(body, 'add_generation_prompt');
  const chat = parseChatPrompt(body, supportOf(model));
  return { model, prompt: '', messages: chat.messages, tools: chat.tools, addGenerationPrompt, addSpecialTokens, returnTokenStrs };
}

/** The worker's DetokenizeRequest for a /detokenize body (ids past the vocabulary are the worker's 400). */
export function parseDetokenizeRequest(raw: unknown): common.DetokenizeRequest {
  const body = asObject(raw);
  const model = parseOptionalModel(body);
  const tokens = body['tokens'];
  if (!Array.isArray(tokens) || tokens.some((t) => !Number.isInteger(t) || (t as number) < 0 || (t as number) > MAX_TOKEN_ID)) {
    throw InlaidError.invalid("'tokens' must be a list of token ids (non-negative integers).", 'tokens');
  }
  if (tokens.length > MAX_DETOKENIZE_IDS) throw InlaidError.invalid(`'tokens' accepts at most ${MAX_DETOKENIZE_IDS} ids.`, 'tokens');
  return { model, tokenIds: tokens as number[] };
}

/** vLLM's TokenizeResponse: `token_strs` only when asked for. */
export function tokenizeResponse(res: common.TokenizeResponse, returnTokenStrs: boolean) {
  return {
    count: res.tokenIds.length,
    max_model_len: res.maxModelLen,
    tokens: res.tokenIds,
    ...(returnTokenStrs ? { token_strs: res.tokenStrs } : {}),
  };
}

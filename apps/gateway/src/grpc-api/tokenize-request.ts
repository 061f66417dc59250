/**
 * gRPC Inference's Tokenize / Detokenize requests into the worker's (pure; INVALID_ARGUMENT naming the field). The
 * prompt or messages go through Generate's own validation and tool rendering (generate-request.ts,
 * generate-tools.ts), so the ids are those Generate would use.
 */
import type { common, inference, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { MAX_DETOKENIZE_IDS } from '../openai/tokenize-request';
import type { ToolSupport } from '../openai/tool-format';
import { grpcMessages, toGenerationInput } from './generate-request';
import { withGrpcTools } from './generate-tools';

/**
 * `model`: the request's model, the base model's id filled in when it was empty. `developer` turns are `system` ones
 * before the tools are rendered (generate-request.ts grpcMessages), as REST chat and /tokenize render them.
 */
export function workerTokenizeRequest(req: inference.TokenizeTextRequest, model: string, supportOf: () => ToolSupport): worker.TokenizeRequest {
  const messages = grpcMessages(req.messages);
  const generate: inference.GenerateRequest = { model, prompt: req.prompt, messages, requestId: '', ...(req.tools !== undefined ? { tools: req.tools } : {}) };
  const { input } = withGrpcTools(generate, toGenerationInput(generate), supportOf);
  return {
    model,
    prompt: input.prompt,
    messages: [...input.messages],
    tools: input.tools ?? '',
    addGenerationPrompt: req.addGenerationPrompt,
    addSpecialTokens: req.addSpecialTokens,
    returnTokenStrs: req.returnTokenStrs,
  };
}

export function checkDetokenizeRequest(req: common.DetokenizeRequest): common.DetokenizeRequest {
  if (req.tokenIds.length > MAX_DETOKENIZE_IDS) throw InlaidError.invalid(`token_ids accepts at most ${MAX_DETOKENIZE_IDS} ids.`, 'token_ids');
  return req;
}

/** The worker's refusal of ids outside the vocabulary names the proto field. */
export function grpcTokenizeRefusal(err: unknown): unknown {
  if (err instanceof InlaidError && err.details.param === 'tokens') return new InlaidError(err.status, err.message, { ...err.details, param: 'token_ids' });
  return err;
}

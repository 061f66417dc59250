/** Validates a client gRPC GenerateRequest into a GenerationInput (pure; INVALID_ARGUMENT naming the field). */
import type { common, inference } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import type { GenerationInput } from '../generation/generation.types';

const MAX_REQUEST_ID = 128;

function checkRange(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && !(Number.isFinite(v) && v >= min && v <= max)) {
    throw InlaidError.invalid(`sampling.${name} must be between ${min} and ${max}, got ${v}.`, `sampling.${name}`);
  }
}

function sampling(s: common.SamplingParams | undefined): common.SamplingParams {
  const p: common.SamplingParams = s ?? { maxTokens: 0, stop: [], stopTokenIds: [], ignoreEos: false };
  checkRange('temperature', p.temperature, 0, 2);
  checkRange('top_p', p.topP, 0, 1);
  if (p.stop.some((x) => x === '')) throw InlaidError.invalid('sampling.stop must not contain empty strings.', 'sampling.stop');
  return p;
}

export function toGenerationInput(req: inference.GenerateRequest): GenerationInput {
  if (req.model.trim() === '') throw InlaidError.invalid('model is required.', 'model');
  const hasPrompt = req.prompt !== '';
  const hasMessages = req.messages.length > 0;
  if (hasPrompt === hasMessages) throw InlaidError.invalid('Set exactly one of prompt or messages.', 'prompt');
  if (req.requestId.length > MAX_REQUEST_ID || /\s/.test(req.requestId)) {
    throw InlaidError.invalid(`request_id must be at most ${MAX_REQUEST_ID} characters without spaces.`, 'request_id');
  }
  return {
    model: req.model,
    prompt: req.prompt,
    messages: req.messages,
    sampling: sampling(req.sampling),
    api: 'grpc',
    requestId: req.requestId === '' ? undefined : req.requestId,
  };
}

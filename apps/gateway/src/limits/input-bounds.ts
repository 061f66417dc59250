/**
 * Size bounds for everything a client sends, checked at the edge before any worker or database sees it
 * (pure). The worker still checks the prompt in tokens against its model length; these bounds stop huge
 * inputs from costing tokenizer time or memory first.
 */
import { InlaidError } from '../common/inlaid-error';

export const BOUNDS = {
  bodyBytes: 1 << 20, // HTTP body limit (413 above it)
  promptChars: 256 * 1024,
  messages: 256,
  maxTokens: 32_768,
  stopSequences: 4,
  stopChars: 256,
  stopTokenIds: 64,
  modelChars: 128,
  topK: 100_000,
} as const;

/** Task (adapter) names: what tasks/ and the worker use as a directory name, so no dots, slashes or spaces. */
export const TASK_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function validateTaskName(name: unknown, param = 'name'): string {
  if (typeof name !== 'string' || !TASK_NAME.test(name)) {
    throw InlaidError.invalid(`'${param}' must match ${TASK_NAME.source} (lower-case letters, digits, '-' and '_').`, param);
  }
  return name;
}

/** Model ids are task names or a base model id such as `HuggingFaceTB/SmolLM2-135M-Instruct`. */
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/;

export function checkModelId(model: string, param = 'model'): void {
  if (model.length > BOUNDS.modelChars || !MODEL_ID.test(model)) {
    throw InlaidError.invalid(`'${param}' must be at most ${BOUNDS.modelChars} characters of [A-Za-z0-9._:/-].`, param);
  }
}

export function checkPromptChars(total: number, param: string): void {
  if (total > BOUNDS.promptChars) {
    throw InlaidError.invalid(`'${param}' is too long: ${total} characters, the limit is ${BOUNDS.promptChars}.`, param);
  }
}

export function checkStops(stop: readonly string[], stopTokenIds: readonly number[], param: string): void {
  if (stop.length > BOUNDS.stopSequences) throw InlaidError.invalid(`'${param}' accepts at most ${BOUNDS.stopSequences} sequences.`, param);
  if (stop.some((s) => s.length > BOUNDS.stopChars)) {
    throw InlaidError.invalid(`Each '${param}' sequence must be at most ${BOUNDS.stopChars} characters.`, param);
  }
  if (stopTokenIds.length > BOUNDS.stopTokenIds) {
    throw InlaidError.invalid(`'stop_token_ids' accepts at most ${BOUNDS.stopTokenIds} ids.`, 'stop_token_ids');
  }
  if (stopTokenIds.some((i) => !Number.isInteger(i) || i < 0 || i > 0x7fffffff)) {
    throw InlaidError.invalid("'stop_token_ids' must be non-negative 32-bit integers.", 'stop_token_ids');
  }
}

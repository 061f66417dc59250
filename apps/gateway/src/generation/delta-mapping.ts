/** Converts worker TokenDeltas into transport-neutral GenerationDeltas (pure). */
import { common, worker } from '@inlaid/proto';
import type { FinishReason, GenerationDelta } from './generation.types';

export function finishReasonOf(reason: common.FinishReason): FinishReason | null {
  switch (reason) {
    case common.FinishReason.FINISH_REASON_STOP:
      return 'stop';
    case common.FinishReason.FINISH_REASON_LENGTH:
      return 'length';
    case common.FinishReason.FINISH_REASON_ABORT:
      return 'abort';
    case common.FinishReason.FINISH_REASON_ERROR:
      return 'error';
    default:
      return null;
  }
}

export function protoFinishReason(reason: FinishReason | null): common.FinishReason {
  switch (reason) {
    case 'stop':
      return common.FinishReason.FINISH_REASON_STOP;
    case 'length':
      return common.FinishReason.FINISH_REASON_LENGTH;
    case 'abort':
      return common.FinishReason.FINISH_REASON_ABORT;
    case 'error':
      return common.FinishReason.FINISH_REASON_ERROR;
    default:
      return common.FinishReason.FINISH_REASON_UNSPECIFIED;
  }
}

export function toGenerationDelta(d: worker.TokenDelta, promptTokens: number): GenerationDelta {
  return {
    text: d.text,
    tokenIds: d.tokenIds,
    finishReason: finishReasonOf(d.finishReason),
    promptTokens: d.promptTokens > 0 ? d.promptTokens : promptTokens,
    completionTokens: d.completionTokens,
    cachedTokens: d.cachedTokens,
    ...(d.logprobs !== undefined ? { logprobs: d.logprobs.tokens } : {}),
    ...(d.promptLogprobs !== undefined && d.promptLogprobs.tokens.length > 0 ? { promptLogprobs: d.promptLogprobs.tokens } : {}),
  };
}

/** Transport-neutral generation request/response types shared by the HTTP and gRPC edges. */
import type { common } from '@inlaid/proto';

export type Api = 'completions' | 'chat.completions' | 'grpc';

export interface GenerationInput {
  readonly model: string;
  /** Raw prompt (completions); exclusive with `messages`. */
  readonly prompt: string;
  /** Chat messages (the worker applies the tokenizer's chat template). */
  readonly messages: readonly common.ChatMessage[];
  /** Tools the model's chat template renders itself: PrepareRequest.tools (openai/tool-prompt.ts nativeTools). */
  readonly tools?: string;
  /** Chat completions' and gRPC Generate's `add_special_tokens`: PrepareRequest.add_special_tokens (unset: the worker's default, vLLM's). */
  readonly addSpecialTokens?: boolean;
  readonly sampling: common.SamplingParams;
  readonly api: Api;
  /** Caller-chosen id (gRPC); generated when absent. */
  readonly requestId?: string;
  /**
   * Whom the request is for (gRPC: the API key's principal id). Set, the request's id is scoped by it towards the
   * scheduler, the workers and the records (generation.service.ts scopedId); the client still sees its own id.
   */
  readonly tenant?: string;
}

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export interface GenerationDelta {
  readonly text: string;
  readonly tokenIds: readonly number[];
  /** Set on the last delta only. */
  readonly finishReason: FinishReason | null;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Of promptTokens, those the worker took from its prefix cache (the same on every delta); absent = 0. */
  readonly cachedTokens?: number;
  /** One per token of tokenIds when the request asked for logprobs (sampling.logprobs set); else absent. */
  readonly logprobs?: readonly common.TokenLogprob[];
  /** sampling.promptLogprobs set: on the first delta with tokens, one per prompt token (the first has no rank). */
  readonly promptLogprobs?: readonly common.TokenLogprob[];
}

/** A running generation: iterate `deltas` once; call `abort` if the consumer goes away. */
export interface Generation {
  readonly id: string;
  readonly model: string;
  readonly promptTokens: number;
  readonly created: number;
  readonly deltas: AsyncIterable<GenerationDelta>;
  abort(reason: string): void;
}

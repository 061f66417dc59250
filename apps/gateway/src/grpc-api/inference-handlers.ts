/** Implements the client-facing inlaid.v1.Inference service on top of GenerationService. */
import { Metadata, sendUnaryData, ServerUnaryCall, ServerWritableStream, ServiceError } from '@grpc/grpc-js';
import { common, inference } from '@inlaid/proto';
import type { CallGate } from '../auth/call-gate.service';
import { afterWrite, DRAIN_TIMEOUT_MS } from '../common/back-pressure';
import { fromWorkerError, InlaidError, WORKER_PARAMS } from '../common/inlaid-error';
import { protoFinishReason } from '../generation/delta-mapping';
import { mergeChoices, sharePromptLogprobs, startChoices } from '../generation/fan-out';
import { GenerationService } from '../generation/generation.service';
import type { GenerationDelta } from '../generation/generation.types';
import { candidatesOf, rankedChoices } from '../openai/best-of';
import { type CallLimits, TokenizerCalls } from '../openai/tokenizer-calls';
import { toolsRefusal } from '../openai/tool-schema';
import type { ToolPlan } from '../openai/tools';
import { WorkersService } from '../workers/workers.service';
import { choicePlan, toGenerationInput } from './generate-request';
import { GrpcToolStream, protoParam, withGrpcTools, type ToolFields } from './generate-tools';
import { checkDecoded } from './malformed';
import { resetIfUnfinished, resetStalled } from './stalled-call';
import { checkDetokenizeRequest, grpcTokenizeRefusal, workerTokenizeRequest } from './tokenize-request';

/**
 * A gRPC status for any failure (Generate, Tokenize, Detokenize, ListModels, and tasks-grpc.service.ts): an error
 * neither InlaidError nor gRPC (a bug) goes through fromWorkerError, logged once, its text kept from the client.
 */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const e = fromWorkerError(err, '');
  const metadata = new Metadata();
  if (e.details.param !== undefined) metadata.set('x-inlaid-param', e.details.param);
  if (e.details.retryAfterS !== undefined) metadata.set('retry-after', String(e.details.retryAfterS));
  return { code: e.status, details: e.message, message: e.message, metadata };
}

/** Events that end a Generate call's wait for drain (the client left or the stream failed). */
const GRPC_GONE = ['cancelled', 'close', 'error'] as const;

/** Parameters a worker's refusal names (common/inlaid-error.ts) to the client request's proto fields. */
const SAMPLING_PARAMS = new Map<string, string>(WORKER_PARAMS.map((p) => [p, `sampling.${p}`]));

/** A refusal from starting the choices, naming the GenerateRequest field at fault (a call schema's: tools.functions). */
export function grpcRefusal(err: unknown, plan: ToolPlan | undefined): unknown {
  const e = plan === undefined ? err : toolsRefusal(err, plan);
  if (!(e instanceof InlaidError) || e.details.param === undefined) return e;
  const param = e.details.param;
  const proto = SAMPLING_PARAMS.get(param) ?? protoParam(param);
  return proto === param ? e : new InlaidError(e.status, e.message, { ...e.details, param: proto });
}

/**
 * What the request counts for the key's limits: its n choices, or its best_of candidates when more (1 for an invalid
 * n or best_of, refused after admission).
 */
function choiceCost(req: inference.GenerateRequest): number {
  try {
    const { n, bestOf } = choicePlan(req);
    return bestOf ?? n;
  } catch {
    return 1;
  }
}

/** One GenerateResponse; `logprobs`: the client asked for them (best_of candidates carry them regardless). */
function responseOf(id: string, index: number, d: GenerationDelta, t: ToolFields | undefined, logprobs: boolean): inference.GenerateResponse {
  return {
    requestId: id,
    text: t?.text ?? d.text,
    toolCalls: t?.toolCalls ?? [],
    tokenIds: [...d.tokenIds],
    finishReason: t?.finishReason ?? protoFinishReason(d.finishReason),
    promptTokens: d.promptTokens,
    completionTokens: d.completionTokens,
    cachedTokens: d.cachedTokens ?? 0,
    logprobs: logprobs && d.logprobs !== undefined ? { tokens: [...d.logprobs] } : undefined,
    promptLogprobs: d.promptLogprobs !== undefined ? { tokens: [...d.promptLogprobs] } : undefined,
    index,
  };
}

/**
 * Aborted when the client cancels (or its deadline passes: grpc-js then ends the call and fires 'cancelled' too), at
 * once if it already has. Listened for from the start: a client that cancels while its key is admitted (auth, limits)
 * is seen at once, not after its request waited in the scheduler's queue and reached a worker ('cancelled' fires only once).
 */
function cancelSignal(call: Pick<ServerUnaryCall<unknown, unknown>, 'cancelled' | 'once'>): AbortSignal {
  const left = new AbortController();
  call.once('cancelled', () => left.abort());
  if (call.cancelled) left.abort();
  return left.signal;
}

/** What ends a unary call's worker call: the client cancelling, and the client's deadline, carried on to the worker. */
function limitsOf<Req, Res>(call: ServerUnaryCall<Req, Res>): CallLimits {
  return { signal: cancelSignal(call), deadline: call.getDeadline() };
}

function bearerOf(metadata: Metadata): string | undefined {
  const v = metadata.get('authorization')[0];
  return v === undefined ? undefined : String(v);
}

/** `drainTimeoutMs`: how long Generate waits for a client that does not read (common/back-pressure.ts; tests shorten it). */
export function inferenceHandlers(
  generation: GenerationService,
  workers: WorkersService,
  gate: CallGate,
  { drainTimeoutMs }: { readonly drainTimeoutMs?: number } = {},
): inference.InferenceServer {
  const tokenizer = new TokenizerCalls(workers);
  /** A unary call admitted for the key (cost 1), its refusals mapped to gRPC statuses; `limits` end its worker call with it. */
  const unary = <Req, Res>(call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>, run: (req: Req, limits: CallLimits) => Promise<Res>): void => {
    const limits = limitsOf(call);
    Promise.resolve()
      .then(() => checkDecoded(call.request))
      .then(() => gate.admit(bearerOf(call.metadata), 'inference'))
      .then((release) => run(call.request, limits).finally(release))
      .then((res) => cb(null, res))
      .catch((err: unknown) => cb(toServiceError(grpcTokenizeRefusal(err))));
  };
  return {
    tokenize(call: ServerUnaryCall<inference.TokenizeTextRequest, common.TokenizeResponse>, cb: sendUnaryData<common.TokenizeResponse>) {
      unary(call, cb, async (req, limits) => {
        const model = tokenizer.modelOrBase(req.model);
        return tokenizer.tokenize(workerTokenizeRequest(req, model, () => workers.toolSupport(model)), limits);
      });
    },

    detokenize(call: ServerUnaryCall<common.DetokenizeRequest, common.DetokenizeResponse>, cb: sendUnaryData<common.DetokenizeResponse>) {
      unary(call, cb, (req, limits) => tokenizer.detokenize(checkDetokenizeRequest(req), limits));
    },

    listModels(call: ServerUnaryCall<inference.ListModelsRequest, inference.ListModelsResponse>, cb: sendUnaryData<inference.ListModelsResponse>) {
      Promise.resolve()
        .then(() => checkDecoded(call.request))
        .then(() => gate.admit(bearerOf(call.metadata), 'inference'))
        .then((release) => {
          release();
          cb(null, { models: workers.listModels() });
        })
        .catch((err: unknown) => cb(toServiceError(err)));
    },

    generate(call: ServerWritableStream<inference.GenerateRequest, inference.GenerateResponse>) {
      void (async () => {
        let release = (): void => undefined;
        let stalled = false;
        const left = cancelSignal(call);
        try {
          checkDecoded(call.request);
          const admission = await gate.admit(bearerOf(call.metadata), 'inference', choiceCost(call.request));
          release = admission;
          if (left.aborted) return; // gone while admitted: nothing is queued (finally frees the key's slots)
          // the request's id is scoped by the key's tenant towards the scheduler and workers (generation.service.ts scopedId)
          const own = { ...toGenerationInput(call.request), tenant: admission.tenant };
          const { input: asked, plan } = withGrpcTools(call.request, own, () => workers.toolSupport(call.request.model));
          const { n, bestOf } = choicePlan(call.request, workers.maxModelLen(call.request.model));
          const { input, count } = candidatesOf(asked, n, bestOf); // best_of: `count` candidates ranked down to n
          const choices = await startChoices(generation, input, count, left).catch((err: unknown) => {
            throw grpcRefusal(err, plan);
          });
          // whatever throws from here on (before the merge runs, it would not free them): the choices stop, the id is freed
          try {
            const tools = plan === undefined ? undefined : Array.from({ length: n }, () => new GrpcToolStream(plan));
            if (call.cancelled) choices.abort('client cancelled');
            call.on('cancelled', () => choices.abort('client cancelled'));
            // only choice 0 scores the prompt (fan-out.ts): its prompt logprobs go on every choice's first message
            const merged = sharePromptLogprobs(mergeChoices(choices), count > 1 && input.sampling.promptLogprobs !== undefined);
            const withLogprobs = asked.sampling.logprobs !== undefined;
            // a client not reading: wait for it (or its leaving) before pulling the next delta (common/back-pressure.ts);
            // one that reads nothing for DRAIN_TIMEOUT_MS is stopped: the wait throws RESOURCE_EXHAUSTED, the catch below
            // resets its stream (stalled-call.ts: a status would wait behind the unread messages) and finally frees the key's slots
            const onStall = (): void => {
              stalled = true;
              choices.abort('client did not read');
            };
            for await (const { index, delta: d } of bestOf === undefined ? merged : rankedChoices(merged, count, n)) {
              if (call.cancelled) break;
              const accepted = call.write(responseOf(choices.id, index, d, tools?.[index]?.fields(d), withLogprobs));
              if (accepted === false) await afterWrite(accepted, call, GRPC_GONE, () => call.cancelled, { onStall, timeoutMs: drainTimeoutMs });
            }
          } finally {
            choices.abort('the response ended'); // idempotent: choices that finished or were aborted are left alone
          }
          call.end();
          // a client that stopped reading near the end would keep the stream open: its trailers wait behind the unread messages
          resetIfUnfinished(call, drainTimeoutMs ?? DRAIN_TIMEOUT_MS);
        } catch (err) {
          // grpc-js turns an 'error' event on a server stream into the call's status (destroy() would drop it).
          if (!call.cancelled && !(stalled && resetStalled(call))) call.emit('error', toServiceError(err));
        } finally {
          release();
        }
      })();
    },
  };
}

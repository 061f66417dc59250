/**
 * Serves one validated OpenAI request over HTTP: a JSON body, or an SSE stream. A client that disconnects
 * mid-stream gets its request aborted on the worker. Errors before the first byte go to the error filter;
 * errors after it are sent as a final SSE error event. `n` > 1 runs n generations (generation/fan-out.ts)
 * whose choices are merged by index; a failing choice ends the response and aborts the others. Completions'
 * `best_of` > n generates best_of candidates with logprobs and returns the n best (best-of.ts), never streamed;
 * `echo` puts the prompt before each choice's text (streamed: in each choice's first chunk), with `logprobs` the
 * prompt tokens' logprobs before the generated ones'; vLLM's `prompt_logprobs` go on each completions choice and on
 * the chat response (never streamed). The prompt is scored once, by choice 0 (the first candidate), whatever n /
 * best_of (fan-out.ts): its prompt logprobs go on every choice.
 */
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { Response } from 'express';
import { afterWrite } from '../common/back-pressure';
import { fromWorkerError } from '../common/inlaid-error';
import { toOpenAIError } from '../common/http-mapping';
import type { common } from '@inlaid/proto';
import { Choices, mergeChoices, startChoices } from '../generation/fan-out';
import { GenerationService } from '../generation/generation.service';
import type { FinishReason } from '../generation/generation.types';
import type { OpenAIRequest } from './request-validation';
import {
  chatChoice,
  chatLogprobs,
  chatResponse,
  completionChoice,
  completionLogprobs,
  completionResponse,
  cachedTokensOf,
  charCount,
  ResponseMeta,
  usageOf,
} from './response-shapes';
import { earlyClose } from './early-close';
import { SSE_HEADERS, sseEvent } from './sse';
import { StreamEncoder } from './stream-encoder';
import { bestCandidates, candidatesOf } from './best-of';
import { concatLogprobs, echoPromptLogprobs, vllmPromptLogprobs } from './prompt-logprobs';
import { assembleToolOutput, toolCallParser } from './tool-calls';
import { toolsRefusal } from './tool-schema';
import type { ToolPlan } from './tools';

type Kind = 'completions' | 'chat.completions';

/** Events that end an SSE response's wait for drain (the client left or the socket failed). */
const SSE_GONE = ['close', 'error'] as const;

@Injectable()
export class OpenAIResponder {
  private readonly logger = new Logger('OpenAI');

  constructor(@Inject(GenerationService) private readonly generation: GenerationService) {}

  async respond(kind: Kind, req: OpenAIRequest, res: Response): Promise<void> {
    const early = earlyClose(res); // also a client that left before this ran (while the key was admitted)
    const tools = req.tools;
    const { input, count } = candidatesOf(req.input, req.n, req.bestOf);
    const choices = await startChoices(this.generation, input, count, early.signal)
      .catch((err: unknown) => {
        throw tools === undefined ? err : toolsRefusal(err, tools);
      })
      .finally(() => early.stop());
    if (res.destroyed) {
      choices.abort('client disconnected before the first token');
      return;
    }
    const onClose = () => {
      if (!res.writableFinished) choices.abort('client disconnected');
    };
    res.on('close', onClose);
    try {
      if (req.stream) await this.stream(kind, choices, req.includeUsage, req.input.sampling.logprobs, res, req.tools, req.echo);
      else res.json(await this.collect(kind, choices, req.input.sampling.logprobs, req.tools, req.n, req.echo ?? '', req.promptLogprobs));
    } finally {
      res.off('close', onClose);
      // a throw before the merge ran (it frees them itself) would leave the choices running and the id held
      choices.abort('the response ended'); // idempotent: choices that finished or were aborted are left alone
    }
  }

  private meta(choices: Choices): ResponseMeta {
    return { id: choices.id, created: choices.created, model: choices.model };
  }

  /** `n` of the choices are returned: all of them, or the n best of best_of candidates. `echo` goes before each text. */
  private async collect(kind: Kind, choices: Choices, topN: number | undefined, tools: ToolPlan | undefined, n: number, echo: string, promptTop?: number) {
    const logprobs = topN !== undefined;
    const acc = choices.generations.map(() => ({
      text: '',
      finish: null as FinishReason | null,
      completionTokens: 0,
      cachedTokens: 0,
      logprobs: [] as common.TokenLogprob[],
      prompt: undefined as readonly common.TokenLogprob[] | undefined,
    }));
    for await (const { index, delta: d } of mergeChoices(choices)) {
      const a = acc[index];
      if (a === undefined) continue;
      a.text += d.text;
      a.completionTokens = d.completionTokens;
      a.cachedTokens = Math.max(a.cachedTokens, d.cachedTokens ?? 0);
      a.finish = d.finishReason ?? a.finish;
      if (d.logprobs !== undefined) a.logprobs.push(...d.logprobs);
      if (d.promptLogprobs !== undefined && a.prompt === undefined) a.prompt = d.promptLogprobs;
    }
    // only choice 0 (the first candidate) scores the prompt (fan-out.ts): its logprobs serve every choice
    const prompt = acc.find((a) => a.prompt !== undefined)?.prompt ?? [];
    const promptLp = promptTop === undefined ? undefined : vllmPromptLogprobs(prompt, promptTop);
    const echoLp = logprobs && echo !== '' ? echoPromptLogprobs(prompt, topN ?? 0) : undefined;
    // echo with logprobs: the prompt's logprobs, then the generated tokens' from the end of the echoed prompt
    const completionLp = (a: (typeof acc)[number]) => {
      if (!logprobs) return null;
      if (echoLp === undefined) return completionLogprobs(a.logprobs, 0).logprobs;
      return concatLogprobs(echoLp, completionLogprobs(a.logprobs, charCount(echo)).logprobs);
    };
    const usage = usageOf(
      choices.promptTokens,
      acc.reduce((n, a) => n + a.completionTokens, 0),
      cachedTokensOf(acc.map((a) => a.cachedTokens), choices.promptTokens),
    );
    const meta = this.meta(choices);
    if (kind === 'completions') {
      const kept = acc.length > n ? bestCandidates(acc.map((a) => a.logprobs), n).map((k) => acc[k] as (typeof acc)[number]) : acc;
      return completionResponse(
        meta,
        kept.map((a, i) => completionChoice(i, echo + a.text, a.finish, completionLp(a), promptLp)),
        usage,
      );
    }
    return chatResponse(
      meta,
      acc.map((a, i) => {
        const lp = logprobs ? chatLogprobs(a.logprobs) : null;
        if (tools === undefined) return chatChoice(i, a.text, a.finish, lp);
        const out = assembleToolOutput(toolCallParser(tools), a.text, a.finish);
        return chatChoice(i, out.content, a.finish, lp, out.toolCalls, out.toolCallsFinish);
      }),
      usage,
      promptLp,
    );
  }

  private async stream(kind: Kind, choices: Choices, includeUsage: boolean, topN: number | undefined, res: Response, tools?: ToolPlan, echo?: string): Promise<void> {
    const encoder = new StreamEncoder(kind, this.meta(choices), includeUsage, {
      choices: choices.generations.length,
      logprobs: topN !== undefined,
      topLogprobs: topN,
      tools,
      echo,
    });
    res.status(200).set(SSE_HEADERS);
    res.flushHeaders();
    // false when the socket's buffer is full (every event written regardless: they are small)
    const write = (events: string[]): boolean => events.reduce<boolean>((ok, e) => res.write(e) !== false && ok, true);
    write(encoder.open());
    try {
      for await (const { index, delta } of mergeChoices(choices)) {
        if (res.destroyed) break;
        // a client not reading: wait for it (or its leaving) before pulling the next delta (common/back-pressure.ts);
        // one that reads nothing for DRAIN_TIMEOUT_MS has its socket closed (its 'close' aborts the generation)
        const accepted = write(encoder.delta(delta, index));
        if (accepted === false) await afterWrite(accepted, res, SSE_GONE, () => res.destroyed, { onStall: () => res.destroy() });
      }
    } catch (err) {
      // InlaidError / gRPC messages as they are; anything else (a bug) is logged there and hidden from the client
      const error = fromWorkerError(err, '');
      this.logger.warn(`stream ${choices.id} failed: ${error.message}`);
      if (!res.destroyed) res.write(sseEvent(toOpenAIError(error).body));
    }
    res.end();
  }
}

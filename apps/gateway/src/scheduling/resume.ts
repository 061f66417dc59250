/**
 * Recompute-resume of a preempted request (pure). The gateway preempts by aborting the request on its
 * worker (freeing its KV) and later admits it again with the prompt extended by the tokens it already
 * streamed, asking only for the remaining tokens; deltas of the resumed run are rebased so the client sees
 * one continuous completion (prompt tokens of the original prompt, completion tokens counted from 0).
 */
import { common, worker } from '@inlaid/proto';

export interface PreparedRequest {
  readonly id: string;
  readonly model: string;
  readonly promptTokenIds: readonly number[];
  /** Sampling after Prepare (maxTokens = the effective limit; 0 = the worker's default). */
  readonly sampling: common.SamplingParams;
}

/**
 * Worker-side id of a run: the request's id and the dispatcher's run number `seq` (unique per dispatcher, first runs
 * included), so a late delta of an aborted run never reaches a newer one, and an id reused right after its cancel never
 * meets the worker still holding the old run (a worker frees an aborted id only at its next step). `~` is outside the
 * request_id charset, so no client id is another's run.
 */
export function runRequestId(id: string, seq: number): string {
  return `${id}~r${seq}`;
}

/** The Admit for run `seq` (runRequestId) of a request that has already produced `generated` tokens. */
export function admitFor(req: PreparedRequest, generated: readonly number[], seq: number): worker.Admit {
  const max = req.sampling.maxTokens;
  return {
    requestId: runRequestId(req.id, seq),
    model: req.model,
    promptTokenIds: [...req.promptTokenIds, ...generated],
    // prompt logprobs came with the first tokens: a run after some were generated does not ask again
    sampling: {
      ...req.sampling,
      maxTokens: max > 0 ? Math.max(1, max - generated.length) : 0,
      ...(generated.length > 0 ? { promptLogprobs: undefined } : {}),
    },
    // The generated tokens now end the prompt; they still count as output for presence/frequency penalties.
    ...(generated.length > 0 ? { resumedOutputTokens: generated.length } : {}),
  };
}

/** A delta of a resumed run as the client must see it: original request id, prompt and completion counts. */
export function rebaseDelta(req: PreparedRequest, d: worker.TokenDelta, generatedBefore: number): worker.TokenDelta {
  return {
    ...d,
    requestId: req.id,
    promptTokens: req.promptTokenIds.length,
    completionTokens: generatedBefore + d.completionTokens,
  };
}

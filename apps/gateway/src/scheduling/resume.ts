/**
 * Recompute-resume of a preempted request (pure). The gateway preempts by aborting the request on its
 * worker (freeing its KV) and later admits it again with the prompt extended by the tokens it already
 * streamed, asking only for the remaining tokens; deltas of the resumed run are rebased so the client sees
 * one continuous completion (prompt tokens of the original prompt, completion tokens counted from 0).
 */
import { randomInt } from 'node:crypto';
import { common, worker } from '@inlaid/proto';

export interface PreparedRequest {
  readonly id: string;
  readonly model: string;
  readonly promptTokenIds: readonly number[];
  /** Sampling after Prepare (maxTokens = the effective limit; 0 = the worker's default). */
  readonly sampling: common.SamplingParams;
}

/**
 * This gateway process's tag in its run ids (6 base36 characters, drawn once per process): two gateways sharing a worker
 * number their runs each from 1, so without it one request id reused on both would meet as one run id on the worker
 * (refused there as already in flight, an INTERNAL error).
 */
export const GATEWAY_NONCE = randomInt(36 ** 5, 36 ** 6).toString(36);

/**
 * Worker-side id of a run, `<id>~r<seq>.<nonce>`: the request's id, the dispatcher's run number `seq` (unique per
 * dispatcher, first runs included) and this process's GATEWAY_NONCE (unique across gateways), so a late delta of an
 * aborted run never reaches a newer one, an id reused right after its cancel never meets the worker still holding the
 * old run (a worker frees an aborted id only at its next step), and two gateways' runs never share an id. `~` is outside
 * the request_id charset, so no client id is another's run.
 */
export function runRequestId(id: string, seq: number, nonce: string = GATEWAY_NONCE): string {
  return `${id}~r${seq}.${nonce}`;
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

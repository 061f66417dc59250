/**
 * `n` choices for one prompt: the gateway runs n independent generations (each prepared, scheduled and
 * recorded as a request of its own, id `<id>#<i>`: `#` is outside the request_id charset, so no client id is a
 * choice's) and merges their deltas, tagged with the choice index. The client's own id is held for the whole request
 * (GenerationService.reserve): one key cannot run two requests of that id at once, whatever the n of either.
 * Choice 0 keeps the request's seed; choice i > 0 gets a seed derived from it (distinct, deterministic), so
 * a seeded request is reproducible and its choices differ. Without a seed each choice draws its own.
 * With n = 1 the request runs exactly as before (its own id, its own seed). Prompt logprobs (sampling.promptLogprobs)
 * are asked of choice 0 only: the prompt is the same for every choice, and the callers reuse choice 0's for the others.
 */
import { createHash, randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { ID_PREFIX, START_SIGNAL_LISTENERS } from './generation.service';
import type { Generation, GenerationDelta, GenerationInput } from './generation.types';

/** Most choices one request may ask for. */
export const MAX_CHOICES = 16;

/** The seed of choice `index`: the request's own for choice 0, a 48-bit hash of (seed, index) for the others. */
export function choiceSeed(seed: number | undefined, index: number): number | undefined {
  if (seed === undefined || index === 0) return seed;
  return createHash('sha256').update(`inlaid-choice:${seed}:${index}`).digest().readUIntBE(0, 6);
}

/** The inputs of the n choices of one request (n = 1: the input itself). */
export function choiceInputs(input: GenerationInput, n: number): { id: string | undefined; inputs: GenerationInput[] } {
  if (n <= 1) return { id: input.requestId, inputs: [input] };
  const id = input.requestId || `${ID_PREFIX[input.api]}-${randomUUID().replace(/-/g, '')}`;
  const { promptLogprobs, ...rest } = input.sampling;
  const inputs = Array.from({ length: n }, (_, i) => ({
    ...input,
    requestId: `${id}#${i}`,
    // the prompt is the same for every choice: only choice 0 scores it (scoring bypasses the prefix cache)
    sampling: { ...rest, ...(i === 0 && promptLogprobs !== undefined ? { promptLogprobs } : {}), seed: choiceSeed(input.sampling.seed, i) },
  }));
  return { id, inputs };
}

/** The running choices of one request. */
export interface Choices {
  /** The response id (the single generation's id when n = 1). */
  readonly id: string;
  readonly model: string;
  readonly created: number;
  readonly promptTokens: number;
  readonly generations: readonly Generation[];
  /** Aborts every choice still running (idempotent), and frees the request's id. */
  abort(reason: string): void;
  /** Frees the request's id for its key's next request (idempotent): mergeChoices calls it when it ends. */
  release(): void;
}

export interface ChoiceDelta {
  readonly index: number;
  readonly delta: GenerationDelta;
}

interface Starter {
  start(input: GenerationInput, signal?: AbortSignal): Promise<Generation>;
  /** Holds the request's own id while it runs, returning its release (GenerationService.reserve: the one check of a client's id). */
  reserve(input: GenerationInput): () => void;
}

/**
 * Holds the request's id (ALREADY_EXISTS when its key runs a request of that id), then starts all n choices; if one
 * cannot start, the others still queued are cancelled at once (they would otherwise wait for a worker only to be
 * aborted), the started ones are aborted, the id is freed, and its error is thrown.
 */
export async function startChoices(generation: Starter, input: GenerationInput, n: number, signal?: AbortSignal): Promise<Choices> {
  const release = generation.reserve(input);
  try {
    return await startHeld(generation, input, n, release, signal);
  } catch (err) {
    release();
    throw err;
  }
}

async function startHeld(generation: Starter, input: GenerationInput, n: number, release: () => void, signal?: AbortSignal): Promise<Choices> {
  const { id, inputs } = choiceInputs(input, n);
  let settled: PromiseSettledResult<Generation>[];
  let failed: { reason: unknown } | undefined;
  if (n <= 1) {
    settled = await Promise.allSettled(inputs.map((i) => generation.start(i, signal)));
  } else {
    const queued = new AbortController(); // the client's signal, or the first choice that fails to start
    // each choice holds up to START_SIGNAL_LISTENERS abort listeners on it; past 10 in all Node prints a
    // MaxListenersExceededWarning (from n = 6)
    setMaxListeners(MAX_CHOICES * START_SIGNAL_LISTENERS + 2, queued.signal);
    const cancel = (): void => queued.abort();
    if (signal?.aborted) cancel();
    else signal?.addEventListener('abort', cancel, { once: true });
    settled = await Promise.allSettled(
      inputs.map((i) =>
        generation.start(i, queued.signal).catch((err: unknown) => {
          failed ??= { reason: err };
          cancel();
          throw err;
        }),
      ),
    ).finally(() => signal?.removeEventListener('abort', cancel));
  }
  const started = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  failed ??= settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) {
    started.forEach((g) => g.abort('another choice of the request failed to start'));
    throw failed.reason;
  }
  const first = started[0];
  if (first === undefined) throw new Error('n must be at least 1');
  return {
    id: n <= 1 ? first.id : (id as string),
    model: first.model,
    created: first.created,
    promptTokens: first.promptTokens,
    generations: started,
    abort: (reason: string) => {
      started.forEach((g) => g.abort(reason));
      release();
    },
    release,
  };
}

type Step = { index: number; result?: IteratorResult<GenerationDelta>; error?: unknown };

/**
 * The deltas of all choices as they arrive, each tagged with its choice index. The first error of any choice
 * ends the merge with that error; ending early (error, break) aborts the choices still running. However it ends, the
 * request's id is freed (Choices.release).
 */
export async function* mergeChoices(choices: Choices): AsyncGenerator<ChoiceDelta> {
  const its = choices.generations.map((g) => g.deltas[Symbol.asyncIterator]());
  const pull = (index: number): Promise<Step> =>
    (its[index] as AsyncIterator<GenerationDelta>).next().then(
      (result) => ({ index, result }),
      (error: unknown) => ({ index, error }),
    );
  const pending = new Map<number, Promise<Step>>(its.map((_, i) => [i, pull(i)]));
  let reason = 'consumer stopped reading';
  try {
    while (pending.size > 0) {
      const step = await Promise.race(pending.values());
      if (step.error !== undefined) {
        reason = 'another choice of the request failed';
        throw step.error;
      }
      if (step.result === undefined || step.result.done === true) {
        pending.delete(step.index);
        continue;
      }
      pending.set(step.index, pull(step.index));
      yield { index: step.index, delta: step.result.value };
    }
  } finally {
    for (const index of pending.keys()) {
      choices.generations[index]?.abort(reason);
      void its[index]?.return?.(undefined)?.catch(() => undefined);
    }
    choices.release();
  }
}

/**
 * Prompt logprobs asked (`asked`), only choice 0 scores the prompt (choiceInputs): the merged deltas with choice 0's
 * prompt logprobs on every choice's first delta. Until they arrive (or choice 0 ends without them), every choice's
 * deltas are held, so a choice that runs ahead of choice 0 still gets them first; then they go out in arrival order.
 */
export async function* sharePromptLogprobs(merged: AsyncIterable<ChoiceDelta>, asked: boolean): AsyncGenerator<ChoiceDelta> {
  if (!asked) {
    yield* merged;
    return;
  }
  let prompt: GenerationDelta['promptLogprobs'];
  let released = false;
  const held: ChoiceDelta[] = [];
  const first = new Set<number>();
  const withPrompt = ({ index, delta }: ChoiceDelta): ChoiceDelta => {
    const isFirst = !first.has(index);
    first.add(index);
    const promptLogprobs = isFirst ? prompt : undefined;
    return promptLogprobs === delta.promptLogprobs ? { index, delta } : { index, delta: { ...delta, promptLogprobs } };
  };
  for await (const cd of merged) {
    if (released) {
      yield withPrompt(cd);
      continue;
    }
    held.push(cd);
    if (cd.delta.promptLogprobs === undefined && !(cd.index === 0 && cd.delta.finishReason !== null)) continue;
    released = true;
    prompt = cd.delta.promptLogprobs;
    for (const h of held.splice(0)) yield withPrompt(h);
  }
  for (const h of held.splice(0)) yield withPrompt(h); // the merge ended without them (an aborted choice 0)
}

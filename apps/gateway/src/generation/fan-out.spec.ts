import { InlaidError } from '../common/inlaid-error';
import { choiceInputs, choiceSeed, mergeChoices, sharePromptLogprobs, startChoices, type ChoiceDelta } from './fan-out';
import type { Generation, GenerationDelta, GenerationInput } from './generation.types';

const input: GenerationInput = {
  model: 'sql',
  prompt: 'hi',
  messages: [],
  sampling: { maxTokens: 4, seed: 42, stop: [], stopTokenIds: [], ignoreEos: false },
  api: 'completions',
};

const delta = (text: string, finish: GenerationDelta['finishReason'] = null): GenerationDelta => ({
  text, tokenIds: [1], finishReason: finish, promptTokens: 3, completionTokens: 1,
});

/** A generation whose deltas the test releases one by one (or fails). */
class FakeGen implements Generation {
  readonly model = 'sql';
  readonly promptTokens = 3;
  readonly created = 1;
  aborted: string | null = null;
  private readonly queue: Array<GenerationDelta | Error | null> = [];
  private wake: (() => void) | null = null;

  constructor(readonly id: string) {}

  push(item: GenerationDelta | Error | null): void {
    this.queue.push(item);
    this.wake?.();
  }

  abort(reason: string): void {
    this.aborted ??= reason;
    this.push(null);
  }

  get deltas(): AsyncIterable<GenerationDelta> {
    return this.iterate();
  }

  private async *iterate(): AsyncGenerator<GenerationDelta> {
    for (;;) {
      while (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
      const item = this.queue.shift();
      if (item === null || item === undefined) return;
      if (item instanceof Error) throw item;
      yield item;
      if (item.finishReason !== null) return;
    }
  }
}

/** A starter holding nothing (GenerationService.reserve is tested with it, request-id-tenants.spec.ts). */
const NO_HOLD = { reserve: () => (): void => undefined };

function starter(fail: Set<number> = new Set()) {
  const started: FakeGen[] = [];
  const inputs: GenerationInput[] = [];
  /** The request ids reserved and not yet released. */
  const held = new Set<string>();
  let calls = 0;
  return {
    started,
    inputs,
    held,
    reserve(i: GenerationInput): () => void {
      const id = i.requestId ?? '(fresh)';
      held.add(id);
      return () => held.delete(id);
    },
    async start(i: GenerationInput): Promise<Generation> {
      const k = calls++;
      inputs.push(i);
      await Promise.resolve();
      if (fail.has(k)) throw InlaidError.unavailable('no worker');
      const g = new FakeGen(i.requestId ?? `cmpl-${k}`);
      started.push(g);
      return g;
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('choiceSeed / choiceInputs', () => {
  it('keeps the seed for choice 0 and derives distinct, reproducible seeds for the others', () => {
    expect(choiceSeed(42, 0)).toBe(42);
    expect(choiceSeed(undefined, 3)).toBeUndefined();
    const seeds = Array.from({ length: 16 }, (_, i) => choiceSeed(42, i));
    expect(new Set(seeds).size).toBe(16);
    expect(seeds.slice(0, 3)).toEqual([42, 154552222084976, 27307993903217]); // pinned: the same across versions
    expect(seeds.every((s) => Number.isSafeInteger(s) && (s as number) >= 0)).toBe(true);
    expect(choiceSeed(43, 1)).not.toBe(choiceSeed(42, 1));
  });

  it('gives n > 1 choices ids <id>#<i>; n = 1 leaves the input alone', () => {
    expect(choiceInputs(input, 1)).toEqual({ id: undefined, inputs: [input] });
    const { id, inputs } = choiceInputs({ ...input, requestId: 'mine' }, 3);
    expect(id).toBe('mine');
    expect(inputs.map((i) => i.requestId)).toEqual(['mine#0', 'mine#1', 'mine#2']);
    expect(inputs[0]!.sampling.seed).toBe(42);
    expect(inputs[2]!.sampling.seed).toBe(choiceSeed(42, 2));
    const generated = choiceInputs(input, 2);
    expect(generated.id).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(generated.inputs[1]!.requestId).toBe(`${generated.id}#1`);
  });

  it('asks only choice 0 to score the prompt (prompt logprobs)', () => {
    const scored = choiceInputs({ ...input, sampling: { ...input.sampling, promptLogprobs: 2 } }, 3).inputs;
    expect(scored.map((i) => i.sampling.promptLogprobs)).toEqual([2, undefined, undefined]);
    expect(scored.every((i) => i.sampling.maxTokens === 4)).toBe(true);
    expect(choiceInputs(input, 2).inputs.every((i) => !('promptLogprobs' in i.sampling))).toBe(true);
  });
});

describe('startChoices / mergeChoices', () => {
  it('merges the choices by index as their deltas arrive and ends when all have finished', async () => {
    const s = starter();
    const choices = await startChoices(s, input, 2);
    expect(choices.id).toMatch(/^cmpl-/);
    expect(s.inputs.map((i) => i.requestId)).toEqual([`${choices.id}#0`, `${choices.id}#1`]);
    const seen: string[] = [];
    const done = (async () => {
      for await (const { index, delta: d } of mergeChoices(choices)) seen.push(`${index}:${d.text}`);
    })();
    const [g0, g1] = s.started as [FakeGen, FakeGen];
    g1.push(delta('b'));
    await tick();
    g0.push(delta('a'));
    await tick();
    g1.push(delta('B', 'stop'));
    await tick();
    g0.push(delta('A', 'length'));
    await done;
    expect(seen).toEqual(['1:b', '0:a', '1:B', '0:A']);
    expect(g0.aborted).toBeNull();
  });

  it('a single choice keeps its own id', async () => {
    const s = starter();
    const choices = await startChoices(s, { ...input, requestId: 'solo' }, 1);
    expect(choices.id).toBe('solo');
    expect(s.inputs[0]!.sampling.seed).toBe(42);
    expect([...s.held]).toEqual(['solo']); // held while it runs
    choices.release();
    expect(s.held.size).toBe(0);
  });

  it('aborts the started choices when one cannot start, and throws its error', async () => {
    const s = starter(new Set([1]));
    await expect(startChoices(s, { ...input, requestId: 'mine' }, 3)).rejects.toMatchObject({ message: 'no worker' });
    expect(s.started).toHaveLength(2);
    expect(s.started.every((g) => g.aborted !== null)).toBe(true);
    expect(s.held.size).toBe(0); // the id is free again
  });

  it('when one choice cannot start, cancels the others still queued at once and throws that error', async () => {
    // Choice 0 waits in the queue until its signal aborts (as GenerationService.start does: the request is
    // dropped from the scheduler and start rejects); choice 1 is refused at once (e.g. the queue is full).
    const cancelled: string[] = [];
    const s = {
      ...NO_HOLD,
      start(i: GenerationInput, signal?: AbortSignal): Promise<Generation> {
        if (i.requestId?.endsWith('#1')) return Promise.reject(InlaidError.unavailable('queue full'));
        return new Promise((_, reject) => {
          const cancel = () => {
            cancelled.push(i.requestId as string);
            reject(InlaidError.unavailable('cancelled while queued'));
          };
          if (signal?.aborted) cancel();
          else signal?.addEventListener('abort', cancel, { once: true });
        });
      },
    };
    const started = startChoices(s, input, 3);
    const outcome = await Promise.race([started.then(() => 'started', (e: Error) => e.message), tick().then(() => 'still waiting')]);
    expect(outcome).toBe('queue full');
    expect(cancelled.sort()).toEqual([expect.stringMatching(/#0$/), expect.stringMatching(/#2$/)]);
  });

  it('a client that goes away while the choices are queued cancels them all', async () => {
    const left = new AbortController();
    const seen: Array<AbortSignal | undefined> = [];
    const s = {
      ...NO_HOLD,
      start(_i: GenerationInput, signal?: AbortSignal): Promise<Generation> {
        seen.push(signal);
        return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(new Error('dropped')), { once: true }));
      },
    };
    const started = startChoices(s, input, 2, left.signal);
    left.abort();
    await expect(started).rejects.toThrow('dropped');
    expect(seen.every((sig) => sig?.aborted === true)).toBe(true);
  });

  it('ends with the first error of any choice and aborts the others', async () => {
    const s = starter();
    const choices = await startChoices(s, input, 2);
    const [g0, g1] = s.started as [FakeGen, FakeGen];
    const run = (async () => {
      for await (const _ of mergeChoices(choices)) void _;
    })();
    g0.push(new Error('worker lost'));
    await expect(run).rejects.toThrow('worker lost');
    expect(g1.aborted).toBe('another choice of the request failed');
  });

  it('aborts every running choice when the consumer stops reading', async () => {
    const s = starter();
    const choices = await startChoices(s, input, 2);
    const [g0, g1] = s.started as [FakeGen, FakeGen];
    g0.push(delta('a'));
    for await (const _ of mergeChoices(choices)) break;
    expect(g0.aborted).toBe('consumer stopped reading');
    expect(g1.aborted).toBe('consumer stopped reading');
  });
});

describe('sharePromptLogprobs', () => {
  const P = [{ top: [] }] as unknown as NonNullable<GenerationDelta['promptLogprobs']>;
  async function run(steps: ChoiceDelta[], asked = true): Promise<string[]> {
    async function* merged(): AsyncGenerator<ChoiceDelta> {
      yield* steps;
    }
    const out: string[] = [];
    for await (const { index, delta: d } of sharePromptLogprobs(merged(), asked)) out.push(`${index}:${d.text}${d.promptLogprobs === P ? '+P' : ''}`);
    return out;
  }

  it("holds every choice until choice 0's prompt logprobs arrive, then puts them on each choice's first delta", async () => {
    const out = await run([
      { index: 1, delta: delta('b') },
      { index: 1, delta: delta('B', 'stop') }, // choice 1 finishes before choice 0 is scored
      { index: 0, delta: { ...delta('a'), promptLogprobs: P } },
      { index: 2, delta: delta('c', 'stop') },
      { index: 0, delta: delta('A', 'stop') },
    ]);
    expect(out).toEqual(['1:b+P', '1:B', '0:a+P', '2:c+P', '0:A']);
  });

  it('releases them when choice 0 ends without prompt logprobs; passes all through when none were asked', async () => {
    expect(await run([{ index: 1, delta: delta('b') }, { index: 0, delta: delta('a', 'stop') }, { index: 1, delta: delta('B', 'stop') }])).toEqual(['1:b', '0:a', '1:B']);
    expect(await run([{ index: 1, delta: { ...delta('b'), promptLogprobs: P } }], false)).toEqual(['1:b+P']);
  });
});

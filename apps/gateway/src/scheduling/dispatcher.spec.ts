import { status } from '@grpc/grpc-js';
import { LENGTH_PREDICTORS, parseSchedulingConfig, SCHEDULING_POLICIES } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { POLICY_NAMES, PREDICTOR_NAMES, resolveConfig, Scheduler, SchedulerConfigInput } from '@inlaid/scheduling';
import { INTERNAL_ERROR_MESSAGE, InlaidError, workerRequestError } from '../common/inlaid-error';
import { Dispatcher, MAX_QUEUED_DELTAS } from './dispatcher';
import { PreparedRequest } from './resume';
import { schedulerOptions } from './scheduler-options';
import { FakeLink, requestOf } from '../testing/fake-link';
import { logSpies } from '../testing/log-spies';
import { Ticket, TicketEvent } from './ticket';

const capacity = (id: string, kvBlocksTotal = 100, maxBatchRows = 8) => ({ id, kvBlocksTotal, blockSize: 4, maxBatchRows, maxPrefillTokens: 4096 });
const req = (id: string, prompt = 8, maxTokens = 16): PreparedRequest => ({
  id, model: 'm', promptTokenIds: Array.from({ length: prompt }, (_, i) => i + 1), sampling: { maxTokens, stop: [], stopTokenIds: [], ignoreEos: true },
});
const tick = () => new Promise((r) => setImmediate(r));

async function drain(t: Ticket): Promise<TicketEvent[]> {
  const out: TicketEvent[] = [];
  for await (const e of t.events) out.push(e);
  return out;
}

/** The second Admit of request `id` on `link` (its resumed run). */
const resumedRun = (link: FakeLink, id: string): worker.Admit | undefined => link.admits.filter((x) => requestOf(x.requestId) === id)[1];

/**
 * A FakeLink that keeps the worker's rule on request ids (engine_loop.py): an id stays in flight until the worker's
 * next step after its Abort (`step`), and an Admit of an id in flight is refused INTERNAL.
 */
class WorkerIdRules extends FakeLink {
  private readonly inFlight = new Set<string>();
  private readonly aborted: string[] = [];
  override admit(a: worker.Admit) {
    const q = super.admit(a);
    if (this.inFlight.has(a.requestId)) {
      q.fail(workerRequestError({ kind: worker.RequestErrorKind.REQUEST_ERROR_KIND_INTERNAL, message: `request id '${a.requestId}' is already in flight` }));
    } else this.inFlight.add(a.requestId);
    return q;
  }
  override abort(id: string): void {
    super.abort(id);
    this.aborted.push(id);
  }
  /** The worker's next step: the aborted ids are free again. */
  step(): void {
    for (const id of this.aborted.splice(0)) this.inFlight.delete(id);
  }
}

function setup(options: SchedulerConfigInput = {}, links = ['a']) {
  let now = 0;
  const d = new Dispatcher(new Scheduler(options), () => now, { warn: () => undefined }, links);
  const fakes = links.map((l) => new FakeLink(l));
  return { d, fakes, advance: (s: number) => (now += s) };
}

describe('Dispatcher', () => {
  it('admits, streams, finishes, lets the predictor learn and drains the queue', async () => {
    const { d, fakes: [a] } = setup();
    d.workerUp(a, capacity('a'));
    const t = d.submit(req('r1'), 'sql', 'hello');
    expect(await t.admitted).toBe('a');
    expect(a.admits[0]).toMatchObject({ requestId: a.runOf('r1'), model: 'm' });
    a.emit('r1', [100, 101], 2);
    a.emit('r1', [102], 3, common.FinishReason.FINISH_REASON_LENGTH);
    const events = await drain(t);
    expect(events.map((e) => e.kind)).toEqual(['admitted', 'delta', 'delta']);
    expect(d.inFlight).toBe(0);
    expect(d.waiting).toBe(0);
    for (let i = 2; i <= 8; i++) {
      const ti = d.submit(req(`r${i}`), 'sql', undefined);
      await ti.admitted;
      a.emit(`r${i}`, [1, 2, 3], 3, common.FinishReason.FINISH_REASON_STOP);
      await drain(ti);
    }
    expect(d.scheduler.predictor.predict('sql', 8)).toMatchObject({ p50: 3, support: 8 }); // learned online from finishes
  });

  it('honours the policy: fcfs-maxloras with max_loras=1 runs one task at a time', async () => {
    const { d, fakes: [a] } = setup({ policy: 'fcfs-maxloras', maxLoras: 1 });
    d.workerUp(a, capacity('a'));
    const t1 = d.submit(req('s1'), 'sql', undefined);
    const t2 = d.submit(req('p1'), 'poet', undefined);
    const t3 = d.submit(req('s2'), 'sql', undefined);
    await tick();
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['s1', 's2']);
    a.emit('s1', [1], 1, common.FinishReason.FINISH_REASON_STOP);
    await tick();
    expect(a.admits).toHaveLength(2); // s2 of sql still runs
    a.emit('s2', [1], 1, common.FinishReason.FINISH_REASON_STOP);
    expect(await t2.admitted).toBe('a');
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['s1', 's2', 'p1']);
    await Promise.all([drain(t1), drain(t3)]);
  });

  it('maps preempt to abort on the worker and resumes by recompute from the streamed tokens', async () => {
    // 8 blocks of 4 tokens: two 8-token prompts fit, their growth does not.
    const { d, fakes: [a], advance } = setup({ policy: 'fifo' });
    d.workerUp(a, capacity('a', 8));
    const t1 = d.submit(req('r1', 8, 20), 'sql', undefined);
    advance(0.1);
    const t2 = d.submit(req('r2', 8, 20), 'sql', undefined);
    await Promise.all([t1.admitted, t2.admitted]);
    const seen: TicketEvent[] = [];
    const reading = (async () => {
      for await (const e of t2.events) seen.push(e);
    })();
    a.emit('r1', [1, 2, 3, 4, 5, 6, 7, 8], 8);
    a.emit('r2', [11, 12, 13, 14, 15, 16, 17, 18], 8);
    await tick();
    d.pass();
    expect(a.aborts.map(requestOf)).toEqual(['r2']); // fifo evicts the newest
    const resumed = resumedRun(a, 'r2');
    expect(resumed).toBeUndefined(); // not yet: no KV until r1 finishes
    a.emit('r1', [9], 9, common.FinishReason.FINISH_REASON_LENGTH);
    await drain(t1);
    const again = resumedRun(a, 'r2') as worker.Admit;
    expect(again.promptTokenIds).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18]);
    expect(again.sampling?.maxTokens).toBe(12);
    expect(again.resumedOutputTokens).toBe(8); // its 8 streamed tokens count as output for penalties
    a.emit('r2', [19], 1, common.FinishReason.FINISH_REASON_LENGTH);
    await reading;
    const last = seen[seen.length - 1];
    expect(last.kind === 'delta' && last.delta).toMatchObject({ requestId: 'r2', promptTokens: 8, completionTokens: 9 });
    expect(seen.filter((e) => e.kind === 'admitted')).toHaveLength(2);
  });

  it('refuses a prompt larger than the KV cache with INVALID_ARGUMENT (HTTP 400)', async () => {
    const { d, fakes: [a] } = setup();
    d.workerUp(a, capacity('a', 2));
    const t = d.submit(req('big', 40), 'sql', undefined);
    await expect(t.admitted).rejects.toMatchObject({ status: status.INVALID_ARGUMENT, details: { code: 'context_length_exceeded' } });
    expect(a.admits).toHaveLength(0);
    expect(d.inFlight).toBe(0);
  });

  it('with abortHopeless refuses requests that waited past their TTFT SLO with UNAVAILABLE (HTTP 503)', async () => {
    const { d, fakes: [a], advance } = setup({ abortHopeless: true, defaultSlo: { ttftS: 1, tpotS: 1 } }, ['a']);
    d.workerUp(a, capacity('a', 100, 1));
    const t1 = d.submit(req('r1'), 'sql', undefined);
    const t2 = d.submit(req('r2'), 'sql', undefined);
    await t1.admitted;
    advance(2);
    d.pass();
    await expect(t2.admitted).rejects.toMatchObject({ status: status.UNAVAILABLE, details: { code: 'slo_unattainable' } });
    expect(d.waiting).toBe(0);
  });

  it('on a lost worker fails streams that delivered output and moves the others to another worker', async () => {
    const { d, fakes: [a, b] } = setup({ policy: 'fifo' }, ['a', 'b']);
    d.workerUp(a, capacity('a'));
    d.workerUp(b, capacity('b'));
    const t1 = d.submit(req('r1'), 'sql', undefined);
    const t2 = d.submit(req('r2'), 'poet', undefined);
    const t3 = d.submit(req('r3'), 'sql', undefined);
    // tasks spread least loaded first (ties by order), a task's requests stay on its worker
    expect(await Promise.all([t1.admitted, t2.admitted, t3.admitted])).toEqual(['a', 'b', 'a']);
    a.emit('r1', [1], 1);
    await tick();
    d.workerDown('a');
    a.queues.forEach((q) => q.fail(InlaidError.unavailable('gone')));
    await expect(drain(t1)).rejects.toMatchObject({ status: status.UNAVAILABLE });
    expect(b.admits.map((x) => requestOf(x.requestId))).toEqual(['r2', 'r3']);
    d.workerDown('b');
    await expect(drain(t3)).rejects.toMatchObject({ status: status.UNAVAILABLE });
    await expect(drain(t2)).rejects.toMatchObject({ status: status.UNAVAILABLE });
    expect(() => d.submit(req('r4'), 'sql', undefined)).toThrow(/No inference worker/);
  });

  it('keeps a task on its home worker, gives a joining worker the next new task, and settles placement loads', async () => {
    const { d, fakes: [a, b] } = setup({ policy: 'fifo' }, ['a', 'b']);
    d.workerUp(a, capacity('a'), ['sql', 'poet']);
    const s1 = d.submit(req('s1'), 'sql', undefined);
    d.workerUp(b, capacity('b'), ['sql', 'poet']);
    const p1 = d.submit(req('p1'), 'poet', undefined);
    const s2 = d.submit(req('s2'), 'sql', undefined);
    expect(await Promise.all([s1.admitted, p1.admitted, s2.admitted])).toEqual(['a', 'b', 'a']);
    expect([d.placement.load('a'), d.placement.load('b')]).toEqual([2, 1]);
    for (const [link, id] of [[a, 's1'], [b, 'p1'], [a, 's2']] as const) link.emit(id, [1], 1, common.FinishReason.FINISH_REASON_STOP);
    await Promise.all([drain(s1), drain(p1), drain(s2)]);
    expect([d.placement.load('a'), d.placement.load('b'), d.placement.homeOf('sql')]).toEqual([0, 0, undefined]);
  });

  it('runs a request id again right after its cancel, on the worker still holding the aborted run (every run its own worker id)', async () => {
    const { d } = setup({}, ['a']);
    const a = new WorkerIdRules('a');
    d.workerUp(a, capacity('a'));
    const t1 = d.submit(req('x'), 'sql', undefined);
    await t1.admitted;
    d.cancel('x'); // the client left: Abort sent, the worker frees the id only at its next step
    const t2 = d.submit(req('x'), 'sql', undefined);
    expect(await t2.admitted).toBe('a');
    const reading = drain(t2);
    a.emit('x', [4], 1, common.FinishReason.FINISH_REASON_STOP); // before: INTERNAL "request id 'x' is already in flight"
    const deltas = (await reading).flatMap((e) => (e.kind === 'delta' ? [e.delta] : []));
    expect(deltas).toEqual([expect.objectContaining({ requestId: 'x', tokenIds: [4] })]); // the client's id, not the run's
    a.step();
    expect(new Set(a.admits.map((x) => x.requestId)).size).toBe(2);
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['x', 'x']);
    expect(a.aborts).toEqual([a.admits[0]?.requestId]);
  });

  it('refuses an id it already holds as a broken invariant (a plain Error: a logged 500), never a client\'s ALREADY_EXISTS', async () => {
    const { d, fakes: [a] } = setup();
    d.workerUp(a, capacity('a'));
    d.submit(req('x'), 'sql', undefined);
    let err: unknown;
    try {
      d.submit(req('x'), 'sql', undefined); // GenerationService.reserve keeps a client's id from ever getting here twice
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(InlaidError); // before: InlaidError ALREADY_EXISTS, which GenerationService translated
    expect((err as Error).message).toMatch(/invariant.*x is already queued or running/);
    expect(a.admits).toHaveLength(1);
    d.cancel('x');
  });

  it('cancel drops a waiting or running request and frees the worker', async () => {
    const { d, fakes: [a] } = setup({}, ['a']);
    d.workerUp(a, capacity('a', 100, 1));
    const t1 = d.submit(req('r1'), 'sql', undefined);
    d.submit(req('r2'), 'sql', undefined);
    await t1.admitted;
    d.cancel('r2');
    d.cancel('r1');
    expect(a.aborts.map(requestOf)).toEqual(['r1']);
    expect(d.inFlight).toBe(0);
    expect(d.waiting).toBe(0);
  });
});

describe("Dispatcher: a worker's refusal of a run", () => {
  const refusal = (kind: worker.RequestErrorKind, message: string) => workerRequestError({ kind, message });
  const Kind = worker.RequestErrorKind;
  const spies = logSpies();

  /**
   * r1 then r2 on `a` (8 blocks of 4 tokens: two 8-token prompts fit, their growth does not): r2 is preempted after 8
   * tokens and resumed on `a` once r1 finished. `read`: what r2's ticket delivers, read from its start.
   */
  async function resumedOnA(d: Dispatcher, a: FakeLink, advance: (s: number) => void): Promise<{ read: Promise<TicketEvent[]> }> {
    const t1 = d.submit(req('r1', 8, 20), 'sql', undefined);
    advance(0.1);
    const t2 = d.submit(req('r2', 8, 20), 'sql', undefined);
    await Promise.all([t1.admitted, t2.admitted]);
    const read = drain(t2);
    read.catch(() => undefined); // a test that fails r2 reads its error through the returned promise
    a.emit('r1', [1, 2, 3, 4, 5, 6, 7, 8], 8);
    a.emit('r2', [11, 12, 13, 14, 15, 16, 17, 18], 8);
    await tick();
    d.pass();
    a.emit('r1', [9], 9, common.FinishReason.FINISH_REASON_LENGTH);
    await drain(t1);
    expect(resumedRun(a, 'r2')?.resumedOutputTokens).toBe(8);
    return { read };
  }

  it('as shutting down, before any output: the run waits again and runs on another worker; the refusing one is drained', async () => {
    const { d, fakes: [a, b] } = setup({ policy: 'fifo' }, ['a', 'b']);
    d.workerUp(a, capacity('a'));
    d.workerUp(b, capacity('b'));
    const finished = jest.spyOn(d.scheduler, 'onFinish');
    const t1 = d.submit(req('r1'), 'sql', undefined);
    expect(await t1.admitted).toBe('a');
    a.fail('r1', refusal(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the worker is shutting down'));
    await tick();
    expect(b.admits.map((x) => requestOf(x.requestId))).toEqual(['r1']); // before: the ticket failed with a 503
    d.workerUp(a, capacity('a')); // its WorkerStates go on during its grace: it admits nothing more
    const t2 = d.submit(req('r2'), 'sql', undefined);
    expect(await t2.admitted).toBe('b');
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['r1']);
    b.emit('r1', [5], 1, common.FinishReason.FINISH_REASON_STOP);
    b.emit('r2', [6], 1, common.FinishReason.FINISH_REASON_STOP);
    const events = await drain(t1);
    expect(events.filter((e) => e.kind === 'delta')).toHaveLength(1);
    expect(finished.mock.results[0]?.value).toMatchObject({ id: 'r1', preemptions: 1 }); // before: 0 (queued as a new arrival)
    await drain(t2);
    d.workerDown('a'); // the link goes down, then a worker at the same address comes back: no longer drained
    d.workerUp(a, capacity('a'));
    d.workerDown('b');
    const t3 = d.submit(req('r3'), 'sql', undefined);
    expect(await t3.admitted).toBe('a');
    d.cancel('r3');
  });

  it('said by its state (WorkerState.draining): drained at once, before any run is refused; its runs go on', async () => {
    const warned: string[] = [];
    const d = new Dispatcher(new Scheduler({ policy: 'fifo' }), () => 0, { warn: (m) => warned.push(m) }, ['a', 'b']);
    const [a, b] = [new FakeLink('a'), new FakeLink('b')];
    d.workerUp(a, capacity('a'));
    d.workerUp(b, capacity('b'));
    const t1 = d.submit(req('r1'), 'sql', undefined);
    expect(await t1.admitted).toBe('a'); // sql's home
    d.workerUp(a, capacity('a'), [], true);
    expect(warned).toEqual(['worker a says it is stopping: no more requests are admitted there']);
    const t2 = d.submit(req('r2'), 'sql', undefined);
    expect(await t2.admitted).toBe('b'); // before: a (nothing was drained until a run there was refused SHUTTING_DOWN)
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['r1']);
    a.emit('r1', [5], 1, common.FinishReason.FINISH_REASON_STOP); // admitted before: it runs to its end there
    expect((await drain(t1)).filter((e) => e.kind === 'delta')).toHaveLength(1);
    d.workerUp(a, capacity('a')); // a later state without the flag (never sent by a stopping worker): still drained
    d.workerUp(b, capacity('b'), [], true);
    expect(() => d.submit(req('r3'), 'sql', undefined)).toThrow(/No inference worker/);
    expect(warned).toHaveLength(2);
    d.cancel('r2');
  });

  it('as shutting down with no other worker: it waits, new requests get 503, and the lost link ends it with a 503', async () => {
    const { d, fakes: [a] } = setup({}, ['a']);
    d.workerUp(a, capacity('a'));
    const t = d.submit(req('r1'), 'sql', undefined);
    await t.admitted;
    a.fail('r1', refusal(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the worker is shutting down'));
    await tick();
    d.pass();
    expect(a.admits).toHaveLength(1); // not sent back to the draining worker again and again
    expect(d.waiting).toBe(1);
    expect(() => d.submit(req('r2'), 'sql', undefined)).toThrow(/No inference worker/);
    d.workerDown('a');
    await expect(drain(t)).rejects.toMatchObject({ status: status.UNAVAILABLE });
  });

  it('as shutting down after output was streamed: a 503 (the client saw part of it)', async () => {
    const { d, fakes: [a, b] } = setup({}, ['a', 'b']);
    d.workerUp(a, capacity('a'));
    d.workerUp(b, capacity('b'));
    const t = d.submit(req('r1'), 'sql', undefined);
    await t.admitted;
    a.emit('r1', [1], 1);
    await tick();
    a.fail('r1', refusal(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the worker is shutting down'));
    await expect(drain(t)).rejects.toMatchObject({ status: status.UNAVAILABLE });
    expect(b.admits).toHaveLength(0);
  });

  it('as shutting down on a resumed run before its own output: it waits again and resumes on another worker', async () => {
    // preempted after 8 tokens (8 blocks of 4 tokens: two 8-token prompts fit, their growth does not), resumed on a
    const { d, fakes: [a, b], advance } = setup({ policy: 'fifo' }, ['a', 'b']);
    d.workerUp(a, capacity('a', 8));
    const { read } = await resumedOnA(d, a, advance);
    d.workerUp(b, capacity('b'));
    a.fail('r2', refusal(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the worker is shutting down'));
    await tick();
    const onB = b.admits.find((x) => requestOf(x.requestId) === 'r2'); // before: the ticket failed with a 503
    expect(onB?.resumedOutputTokens).toBe(8);
    expect(onB?.promptTokenIds).toHaveLength(16);
    b.emit('r2', [19], 1, common.FinishReason.FINISH_REASON_LENGTH);
    const deltas = (await read).flatMap((e) => (e.kind === 'delta' ? [e.delta] : []));
    expect(deltas.flatMap((x) => x.tokenIds)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(deltas[deltas.length - 1]).toMatchObject({ requestId: 'r2', completionTokens: 9 });
  });

  it('as bad input on a run queued again only because its worker was shutting down: still the client\'s 400', async () => {
    const { d, fakes: [a, b] } = setup({ policy: 'fifo' }, ['a', 'b']);
    d.workerUp(a, capacity('a'));
    d.workerUp(b, capacity('b'));
    const t = d.submit(req('r1'), 'sql', undefined);
    expect(await t.admitted).toBe('a');
    a.fail('r1', refusal(Kind.REQUEST_ERROR_KIND_SHUTTING_DOWN, 'the worker is shutting down'));
    await tick();
    expect(b.admits[0]?.resumedOutputTokens).toBeUndefined(); // the same Admit as the first: nothing resumed
    b.fail('r1', refusal(Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'logit_bias: token id 99999 is outside the vocabulary'));
    // before: a logged 500 (a second run was taken for a resumed one)
    await expect(drain(t)).rejects.toMatchObject({ status: status.INVALID_ARGUMENT, details: { param: 'logit_bias' } });
    expect(spies.error).not.toHaveBeenCalled();
  });

  it("as bad input: a 400 on the request's first run, a logged 500 on a resumed one (never the client's fault)", async () => {
    const { d, fakes: [a], advance } = setup({ policy: 'fifo' });
    d.workerUp(a, capacity('a', 8));
    const first = d.submit(req('f1'), 'sql', undefined);
    await first.admitted;
    a.fail('f1', refusal(Kind.REQUEST_ERROR_KIND_BAD_INPUT, 'logit_bias: token id 99999 is outside the vocabulary'));
    await expect(drain(first)).rejects.toMatchObject({ status: status.INVALID_ARGUMENT, details: { param: 'logit_bias' } });
    const failed = (await resumedOnA(d, a, advance)).read.catch((err: unknown) => err);
    a.fail('r2', refusal(Kind.REQUEST_ERROR_KIND_BAD_INPUT, "response_format: the resumed output's token 3 (14) does not match the grammar"));
    const err = (await failed) as InlaidError;
    expect([err.status, err.message]).toEqual([status.INTERNAL, INTERNAL_ERROR_MESSAGE]); // before: a 400 with the worker's text
    expect(String(spies.error.mock.calls[0][0])).toContain('does not match the grammar');
  });
});

describe('Dispatcher: a request whose consumer stops taking deltas', () => {
  const big = { kvBlocksTotal: 100_000, rows: 1 };
  const longReq = (id: string) => req(id, 8, 4 * MAX_QUEUED_DELTAS);

  it('is stopped (RESOURCE_EXHAUSTED, the worker told to abort, its slot freed) once more than MAX_QUEUED_DELTAS wait', async () => {
    const { d, fakes: [a] } = setup({}, ['a']);
    d.workerUp(a, capacity('a', big.kvBlocksTotal, big.rows));
    const t1 = d.submit(longReq('slow'), 'sql', undefined);
    const t2 = d.submit(longReq('next'), 'sql', undefined);
    await t1.admitted;
    expect(a.admits.map((x) => requestOf(x.requestId))).toEqual(['slow']); // one row: the next one waits
    for (let i = 0; i < MAX_QUEUED_DELTAS + 100; i++) a.emit('slow', [7], i + 1); // nobody reads t1.events
    await tick();
    expect(a.aborts.map(requestOf)).toEqual(['slow']);
    expect(await t2.admitted).toBe('a'); // the slot went to the waiting request
    let deltas = 0;
    let failure: unknown;
    try {
      for await (const e of t1.events) if (e.kind === 'delta') deltas += 1;
    } catch (err) {
      failure = err;
    }
    expect(deltas).toBe(MAX_QUEUED_DELTAS); // with the 'admitted' event: MAX_QUEUED_DELTAS + 1 were queued, then the error
    expect(failure).toBeInstanceOf(InlaidError);
    expect((failure as InlaidError).status).toBe(status.RESOURCE_EXHAUSTED);
    expect(d.inFlight).toBe(1); // only `next`
    d.cancel('next');
  });

  it('never stops a consumer that reads as the deltas come', async () => {
    const { d, fakes: [a] } = setup({}, ['a']);
    d.workerUp(a, capacity('a', big.kvBlocksTotal, big.rows));
    const t = d.submit(longReq('reader'), 'sql', undefined);
    await t.admitted;
    const read = drain(t);
    const total = 3 * MAX_QUEUED_DELTAS;
    for (let i = 0; i < total; i++) {
      a.emit('reader', [7], i + 1, i === total - 1 ? common.FinishReason.FINISH_REASON_LENGTH : common.FinishReason.FINISH_REASON_UNSPECIFIED);
      if (i % 64 === 63) await tick();
    }
    const events = await read;
    expect(events.filter((e) => e.kind === 'delta')).toHaveLength(total);
    expect(a.aborts).toEqual([]);
    expect(d.inFlight).toBe(0);
  });
});

describe('scheduler options', () => {
  it('config name lists match the scheduling library', () => {
    expect([...SCHEDULING_POLICIES]).toEqual([...POLICY_NAMES]);
    expect([...LENGTH_PREDICTORS].sort()).toEqual([...PREDICTOR_NAMES].sort());
  });

  it('maps INLAID_* settings onto a valid Scheduler', () => {
    const cfg = parseSchedulingConfig({ INLAID_POLICY: 'mlfq', INLAID_BETA: '3', INLAID_SLO_TTFT_MS: '1500', INLAID_SLO_TPOT_MS: '50' });
    const s = new Scheduler(schedulerOptions(cfg));
    expect(s.config.policy).toBe('mlfq');
    expect(s.config.inlaid.beta).toBe(3);
    expect(s.config.defaultSlo).toEqual({ ttftS: 1.5, tpotS: 0.05 });
  });

  it('keeps the library defaults for triage, the room rule and the fixed prefill budget', () => {
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    expect(s.config.inlaid).toMatchObject({ triage: true, budgetFixedPrefill: 'auto' });
    expect(s.config.inlaid.budgetFixedPrefill).toBe(resolveConfig().inlaid.budgetFixedPrefill);
    expect(s.config.inlaid.batchedAdmission).toEqual(resolveConfig().inlaid.batchedAdmission);
  });

  it.each([
    ['on', true], ['off', false], ['auto', 'auto'], ['false', false],
  ])('passes INLAID_BUDGET_FIXED_PREFILL=%s to the inlaid policy as %j', (v, want) => {
    const s = new Scheduler(schedulerOptions(parseSchedulingConfig({ INLAID_BUDGET_FIXED_PREFILL: v })));
    expect(s.config.inlaid.budgetFixedPrefill).toBe(want);
  });

  it('passes INLAID_TRIAGE, INLAID_BATCH_NEED_ROOM and INLAID_BUDGET_FIXED_PREFILL to the inlaid policy', () => {
    const cfg = parseSchedulingConfig({ INLAID_TRIAGE: 'false', INLAID_BATCH_NEED_ROOM: 'false', INLAID_BUDGET_FIXED_PREFILL: 'true' });
    const s = new Scheduler(schedulerOptions(cfg));
    expect(s.config.inlaid).toMatchObject({ triage: false, budgetFixedPrefill: true });
    expect(s.config.inlaid.batchedAdmission).toEqual({ ...resolveConfig().inlaid.batchedAdmission, needRoom: false });
  });

  it('passes INLAID_BATCH_BUDGET_ROOM to the batch gate (default on)', () => {
    const off = new Scheduler(schedulerOptions(parseSchedulingConfig({ INLAID_BATCH_BUDGET_ROOM: 'false' })));
    expect(off.config.inlaid.batchedAdmission).toEqual({ ...resolveConfig().inlaid.batchedAdmission, budgetRoom: false });
    const on = new Scheduler(schedulerOptions(parseSchedulingConfig({})));
    expect(on.config.inlaid.batchedAdmission.budgetRoom).toBe(true);
  });
});

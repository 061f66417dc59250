import { COST_FIT_TERMS } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { COST_TERM_NAMES, Scheduler } from '@inlaid/scheduling';
import { AsyncQueue } from '../workers/async-queue';
import { Dispatcher } from './dispatcher';
import { PreparedRequest, runRequestId } from './resume';
import { ServedCost } from './served-cost';
import { WorkerLink } from './ticket';

/** A fake worker whose step takes 10 ms + 2 ms per row: `step()` advances the clock and emits one delta per running run. */
class FakeWorker implements WorkerLink {
  readonly addr = 'w';
  readonly queues = new Map<string, { q: AsyncQueue<worker.TokenDelta>; prompt: number; done: number; max: number }>();
  constructor(private readonly clock: { now: number }) {}
  admit(a: worker.Admit): AsyncQueue<worker.TokenDelta> {
    const q = new AsyncQueue<worker.TokenDelta>();
    this.queues.set(a.requestId, { q, prompt: a.promptTokenIds.length, done: 0, max: a.sampling?.maxTokens ?? 1 });
    return q;
  }
  abort(id: string): void {
    this.queues.get(id)?.q.end();
    this.queues.delete(id);
  }
  step(): void {
    this.clock.now += 0.01 + 0.002 * this.queues.size;
    for (const [id, r] of [...this.queues]) {
      r.done += 1;
      const fin = r.done >= r.max;
      r.q.push({ requestId: id, text: 'x', tokenIds: [7], finishReason: fin ? common.FinishReason.FINISH_REASON_LENGTH : common.FinishReason.FINISH_REASON_UNSPECIFIED, promptTokens: r.prompt, completionTokens: r.done, cachedTokens: 0 });
      if (fin) {
        r.q.end();
        this.queues.delete(id);
      }
    }
  }
}

const req = (id: string, maxTokens: number): PreparedRequest => ({ id, model: 'm', promptTokenIds: [1, 2, 3, 4], sampling: { maxTokens, stop: [], stopTokenIds: [], ignoreEos: true } });
const tick = () => new Promise((r) => setImmediate(r));

describe('ServedCost behind the Dispatcher', () => {
  it('times the steps the dispatcher streams and fits their cost; exports a calibration file', async () => {
    const clock = { now: 0 };
    const d = new Dispatcher(new Scheduler({ policy: 'fifo' }), () => clock.now, { warn: () => undefined }, ['w']);
    const served = new ServedCost({ window: 200, minSteps: 20, refitEvery: 5 });
    d.observe(served);
    const w = new FakeWorker(clock);
    d.workerUp(w, { id: 'w', kvBlocksTotal: 1000, blockSize: 4, maxBatchRows: 16, maxPrefillTokens: 4096 });
    // requests of different lengths so the batch size varies: 1..6 rows
    for (let i = 0; i < 6; i++) d.submit(req(`r${i}`, 10 + 8 * i), 't' + (i % 2), undefined);
    await tick();
    for (let s = 0; s < 60 && w.queues.size > 0; s++) {
      w.step();
      await tick();
    }
    expect(served.stepsSeen('w')).toBeGreaterThan(40);
    const c = served.stepCost('w');
    expect(c?.baseS).toBeCloseTo(0.01, 4); // the truth: 10 ms + 2 ms per row (rows as decode rows here)
    expect(c?.decodeRowS).toBeCloseTo(0.002, 4);
    const file = served.exportFile('w', { kv_blocks: 1000, block_size: 4, max_batch_rows: 16, max_prefill_tokens: 4096 }, { ttft_s: 1, tpot_s: 0.1 }, 'test', new Date(0));
    expect(file?.fit_error.median_rel).toBeLessThan(0.01);
    expect(file?.label).toBe('served-w');
  });

  it('planQuantile scales the planned step cost by a quantile of served / predicted time', () => {
    const plain = new ServedCost({ window: 100, minSteps: 20, refitEvery: 1 });
    const scaled = new ServedCost({ window: 100, minSteps: 20, refitEvery: 1 }, 0.9);
    for (const sc of [plain, scaled]) {
      let t = 0;
      for (let i = 0; i < 60; i++) {
        const id = `r${i}`;
        sc.admitted('w', id, t);
        const rows = 1 + (i % 5);
        t += (0.01 + 0.002 * rows) * (i % 3 === 0 ? 1.5 : 1); // every 3rd step is 1.5x slower
        for (let r = 0; r < rows; r++) sc.delta('w', t + r * 1e-5, { id: `${id}-${r}`, task: 'x', promptTokens: 4, completionTokens: 2, tokens: 1, finished: false });
        sc.delta('w', t + 1e-4, { id, task: 'x', promptTokens: 4, completionTokens: 1, tokens: 1, finished: false });
      }
    }
    const a = plain.stepCost('w');
    const b = scaled.stepCost('w');
    expect(a).toBeDefined();
    expect((b?.baseS ?? 0) / (a?.baseS ?? 1)).toBeGreaterThan(1.2);
    const k = (b?.baseS ?? 0) / (a?.baseS ?? 1);
    for (const [name, v] of Object.entries(a ?? {})) expect((b as unknown as Record<string, number>)[name]).toBeCloseTo(v * k, 12);
  });

  it('tells the observer about admissions, deltas and runs stopped by the gateway', async () => {
    const clock = { now: 0 };
    const d = new Dispatcher(new Scheduler({ policy: 'fifo' }), () => clock.now, { warn: () => undefined }, ['w']);
    const log: string[] = [];
    d.observe({
      admitted: (addr, id) => log.push(`admit ${addr} ${id}`),
      delta: (addr, _now, row) => log.push(`delta ${addr} ${row.id} ${row.task} ${row.completionTokens}${row.finished ? ' fin' : ''}`),
      ended: (addr, id) => log.push(`end ${addr} ${id}`),
      workerGone: (addr) => log.push(`gone ${addr}`),
    });
    const w = new FakeWorker(clock);
    d.workerUp(w, { id: 'w', kvBlocksTotal: 1000, blockSize: 4, maxBatchRows: 16, maxPrefillTokens: 4096 });
    d.submit(req('a', 2), 'sql', undefined);
    d.submit(req('b', 9), 'poet', undefined);
    await tick();
    w.step();
    await tick();
    w.step();
    await tick();
    d.cancel('b');
    d.workerDown('w');
    // by each run's worker-side id (resume.ts runRequestId: `<id>~r<n>.<this gateway's nonce>`)
    const [a1, b2] = [runRequestId('a', 1), runRequestId('b', 2)];
    expect(log).toEqual([`admit w ${a1}`, `admit w ${b2}`, `delta w ${a1} sql 1`, `delta w ${b2} poet 1`, `delta w ${a1} sql 2 fin`, `delta w ${b2} poet 2`, `end w ${b2}`, 'gone w']);
  });

  it('INLAID_COST_FIT_TERMS names the terms of @inlaid/scheduling', () => {
    expect([...COST_FIT_TERMS]).toEqual([...COST_TERM_NAMES]);
  });
});

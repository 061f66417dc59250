/**
 * Discrete-event simulation of workers executing steps under the real @inlaid/scheduling Scheduler.
 * Events are arrivals and step completions; an idle worker asks the scheduler for a plan, the plan's
 * batch runs for stepTime(cost model) seconds, and every request in it gets one token at the end.
 * Preempted requests keep their generated tokens and are re-prefilled (recompute) when re-admitted.
 * With `maxModelLen`, the worker's context limit applies (context-limit.ts): over-long prompts are refused on
 * arrival and outputs stop at the limit.
 */
import { Scheduler, SchedulerConfigInput, StepPlan } from '@inlaid/scheduling';
import { TraceRecord } from '@inlaid/workload';
import { checkMaxModelLen, fitContext } from './context-limit';
import { CostModel, stepCostOf, stepTime } from './cost-model';
import { RequestResult, SimReport, summarize } from './metrics';
import { addStepTerms, StepTimeTerms, zeroTerms } from './step-terms';

export interface SimOptions {
  readonly scheduler: SchedulerConfigInput;
  readonly costModel: CostModel;
  readonly workers: number;
  /** Overrides the cost model's KV capacity (blocks per worker). */
  readonly kvBlocks?: number;
  /** Stop this long after the last arrival; whatever is unfinished then misses its SLO. */
  readonly drainS: number;
  /** Tell the scheduler the cost model's decode-step cost (default true; false for the ablation). */
  readonly stepCostHint?: boolean;
  /** The worker's context limit in tokens (prompt + output); undefined = none. */
  readonly maxModelLen?: number;
}

export interface SimStats {
  readonly steps: number;
  readonly preemptions: number;
  readonly meanBatchRows: number;
  readonly meanAdaptersPerStep: number;
  readonly endS: number;
  /** Busy time of all workers by step-time term (step-terms.ts). */
  readonly time: StepTimeTerms;
}

interface Live {
  readonly rec: TraceRecord;
  generated: number;
  /** Output tokens the worker will generate (the trace's, cut at the context limit). */
  target: number;
  /** When the scheduler first admitted it. */
  admitS?: number;
  rejected?: boolean;
  result?: RequestResult;
}

interface WorkerRun {
  readonly id: string;
  busyUntil: number;
  batch: readonly string[];
}

export function simulate(trace: readonly TraceRecord[], o: SimOptions): { report: SimReport; stats: SimStats; results: RequestResult[] } {
  if (!Number.isInteger(o.workers) || o.workers < 1) throw new Error(`workers must be a positive integer, got ${o.workers}`);
  checkMaxModelLen(o.maxModelLen);
  const m = o.costModel;
  const sched = new Scheduler({ ...o.scheduler, defaultSlo: o.scheduler.defaultSlo ?? { ttftS: m.suggested_slo.ttft_s, tpotS: m.suggested_slo.tpot_s } });
  const workers: WorkerRun[] = Array.from({ length: o.workers }, (_, i) => ({ id: `w${i}`, busyUntil: Number.NaN, batch: [] }));
  for (const w of workers) {
    sched.onWorkerState({ id: w.id, kvBlocksTotal: o.kvBlocks ?? m.kv_blocks, blockSize: m.block_size, maxBatchRows: m.max_batch_rows, maxPrefillTokens: m.max_prefill_tokens, ...(o.stepCostHint === false ? {} : { stepCost: stepCostOf(m) }) });
  }
  const live = new Map<string, Live>();
  const all: Live[] = trace.map((rec) => ({ rec, generated: 0, target: rec.output_tokens }));
  const horizon = (trace.length > 0 ? trace[trace.length - 1].arrival_s : 0) + o.drainS;
  let next = 0;
  let now = 0;
  let aborted = 0;
  const acc = { steps: 0, preemptions: 0, rows: 0, adapters: 0 };
  const time = zeroTerms();

  const finishStep = (w: WorkerRun): void => {
    for (const id of w.batch) {
      const l = live.get(id) as Live;
      sched.onToken(id, now);
      l.generated += 1;
      if (l.generated >= l.target) {
        const out = sched.onFinish(id, now);
        l.result = { task: l.rec.task, arrivalS: l.rec.arrival_s, promptTokens: l.rec.prompt_tokens, outputTokens: out.outputTokens, admitS: l.admitS, finishS: now, ttftS: out.ttftS, tpotS: out.tpotS, metSlo: out.metSlo, preemptions: out.preemptions };
        live.delete(id);
      }
    }
    w.batch = [];
    w.busyUntil = Number.NaN;
  };

  const startStep = (w: WorkerRun, plan: StepPlan): void => {
    let prefill = 0;
    let newRows = 0;
    for (const d of plan.decisions) {
      if (d.kind === 'admit') {
        prefill += d.prefillTokens;
        newRows += 1;
        const l = live.get(d.requestId) as Live;
        l.admitS ??= now;
      } else if (d.kind === 'preempt') acc.preemptions += 1;
      else {
        aborted += 1;
        live.delete(d.requestId);
      }
    }
    if (plan.batch.length === 0) return;
    const tasks = new Set<string>();
    let kv = 0;
    for (const id of plan.batch) {
      const l = live.get(id) as Live;
      tasks.add(l.rec.task);
      kv += l.rec.prompt_tokens + l.generated;
    }
    const shape = { prefillTokens: prefill, decodeRows: plan.batch.length - newRows, adapters: tasks.size, kvTokens: kv };
    const dt = stepTime(m, shape);
    addStepTerms(time, m, shape);
    w.batch = plan.batch;
    w.busyUntil = now + dt;
    acc.steps += 1;
    acc.rows += plan.batch.length;
    acc.adapters += tasks.size;
  };

  for (;;) {
    for (const w of workers) if (w.busyUntil <= now) finishStep(w);
    while (next < all.length && all[next].rec.arrival_s <= now) {
      const l = all[next];
      const id = `r${next++}`;
      const fit = fitContext(l.rec, o.maxModelLen);
      if (fit.rejected) {
        l.rejected = true; // refused before the scheduler sees it, as the worker's Prepare does
        continue;
      }
      l.target = fit.outputTokens;
      live.set(id, l);
      sched.enqueue({ id, task: l.rec.task, promptTokens: l.rec.prompt_tokens, arrivalS: l.rec.arrival_s, prompt: l.rec.prompt });
    }
    if (now >= horizon) break;
    for (const w of workers) if (Number.isNaN(w.busyUntil)) startStep(w, sched.schedule(now, w.id));
    const busy = workers.filter((w) => !Number.isNaN(w.busyUntil)).map((w) => w.busyUntil);
    const arrival = next < all.length ? all[next].rec.arrival_s : Infinity;
    const t = Math.min(arrival, ...busy);
    if (!Number.isFinite(t)) break; // nothing running, nothing arriving: done (or stuck)
    now = Math.min(Math.max(t, now), horizon);
  }

  const results: RequestResult[] = all.map(
    (l) =>
      l.result ?? {
        task: l.rec.task,
        arrivalS: l.rec.arrival_s,
        promptTokens: l.rec.prompt_tokens,
        outputTokens: l.generated,
        admitS: l.admitS,
        metSlo: false,
        ...(l.rejected === true ? { rejected: true } : {}),
      },
  );
  const endS = results.reduce((a, r) => Math.max(a, r.finishS ?? 0), now);
  return {
    results,
    report: summarize(results, aborted, endS),
    stats: {
      steps: acc.steps,
      preemptions: acc.preemptions,
      meanBatchRows: acc.steps > 0 ? acc.rows / acc.steps : 0,
      meanAdaptersPerStep: acc.steps > 0 ? acc.adapters / acc.steps : 0,
      endS,
      time,
    },
  };
}

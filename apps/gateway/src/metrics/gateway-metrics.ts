/**
 * The gateway's metric families and how a request record and a worker snapshot update them (pure apart from
 * the Registry it owns). Task-labelled families go through a TaskLabeler, so the `task` label takes at most
 * maxLabelled + 1 values ("other" aggregates the rest). Latencies are exported in seconds, on the same bucket
 * bounds as the dashboard rollups.
 */
import type { RequestRecord } from '@inlaid/db';
import type { WorkerView } from '../dashboard/worker-view';
import { FINISHED_JOB, JobView } from '../dashboard/task-jobs';
import { LATENCY_BOUNDS_MS } from './latency-buckets';
import { Counter, Gauge, Histogram, Registry } from './prom-text';
import { judge, SloTargets, timings } from './slo';
import { OTHER, Rerank, TaskLabeler } from './task-labeler';

const SECONDS = LATENCY_BOUNDS_MS.map((ms) => ms / 1000);

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly r = this.registry;
  readonly requests = this.r.register(new Counter('inlaid_requests_total', 'Finished requests by task and final status.', ['task', 'status']));
  readonly tokens = this.r.register(new Counter('inlaid_tokens_total', 'Prompt and completion tokens by task.', ['task', 'kind']));
  readonly ttft = this.r.register(new Histogram('inlaid_ttft_seconds', 'Time to first token of completed requests.', ['task'], SECONDS));
  readonly tpot = this.r.register(new Histogram('inlaid_tpot_seconds', 'Time per output token (after the first) of completed requests.', ['task'], SECONDS));
  readonly latency = this.r.register(new Histogram('inlaid_request_duration_seconds', 'End-to-end latency of completed requests.', ['task'], SECONDS));
  readonly slo = this.r.register(new Counter('inlaid_slo_requests_total', 'Requests judged against their task SLO (aborted ones are not judged).', ['task', 'result']));
  readonly sloRatio = this.r.register(new Gauge('inlaid_slo_attainment_ratio', 'SLO met / judged since the gateway started; use rate() of inlaid_slo_requests_total for windows.', ['task']));
  readonly adapterLookups = this.r.register(new Counter('inlaid_adapter_requests_total', 'Adapter requests by whether the adapter was resident on the worker that served them (as of its last WorkerState).', ['result']));
  readonly up = this.r.register(new Gauge('inlaid_worker_up', '1 when the gateway holds a session with the worker.', ['worker']));
  readonly queue = this.r.register(new Gauge('inlaid_queue_depth', 'Requests waiting in the worker scheduler queue.', ['worker']));
  readonly running = this.r.register(new Gauge('inlaid_batch_size', 'Sequences in the worker running batch (its batch size per step).', ['worker']));
  readonly inFlight = this.r.register(new Gauge('inlaid_gateway_in_flight', 'Requests the gateway has admitted to the worker and not finished.', ['worker']));
  readonly kvUsed = this.r.register(new Gauge('inlaid_kv_cache_usage_ratio', 'Fraction of the worker KV cache blocks in use.', ['worker']));
  readonly kvTotal = this.r.register(new Gauge('inlaid_kv_cache_blocks', 'KV cache blocks on the worker.', ['worker']));
  readonly steps = this.r.register(new Gauge('inlaid_worker_steps_per_second', 'Engine steps per second (moving average).', ['worker']));
  readonly resident = this.r.register(new Gauge('inlaid_adapters_resident', 'Adapters resident on the worker.', ['worker']));
  readonly residentTask = this.r.register(new Gauge('inlaid_adapter_resident', '1 per labelled task and worker where the task adapter is resident (top tasks only).', ['worker', 'task']));
  readonly jobProgress = this.r.register(new Gauge('inlaid_requantization_progress_ratio', 'Progress of unfinished task onboarding jobs (collect Hessians, re-quantize, swap), 0..1.', ['task', 'stage']));
  readonly labelled = this.r.register(new Gauge('inlaid_metrics_labelled_tasks', 'Tasks with their own task label; the rest are task="other".'));
  private readonly met = new Map<string, { met: number; judged: number }>();

  constructor(readonly labeler: TaskLabeler) {}

  /** One finished request: counters, histograms and its SLO verdict against `targets`. */
  observe(row: RequestRecord, targets: SloTargets, residentOnWorker: boolean | null): void {
    const task = this.labeler.label(row.task);
    this.requests.inc({ task, status: row.status });
    this.tokens.inc({ task, kind: 'prompt' }, row.tokensIn);
    this.tokens.inc({ task, kind: 'completion' }, row.tokensOut);
    if (row.status === 'completed') {
      const t = timings(row);
      if (t.ttftMs !== null) this.ttft.observe({ task }, t.ttftMs / 1000);
      if (t.tpotMs !== null) this.tpot.observe({ task }, t.tpotMs / 1000);
      if (t.latencyMs !== null) this.latency.observe({ task }, t.latencyMs / 1000);
    }
    const v = judge(row, targets);
    if (v.eligible) {
      this.slo.inc({ task, result: v.met ? 'met' : 'missed' });
      const m = this.met.get(task) ?? { met: 0, judged: 0 };
      m.judged += 1;
      m.met += v.met ? 1 : 0;
      this.met.set(task, m);
      this.sloRatio.set({ task }, m.met / m.judged);
    }
    if (residentOnWorker !== null) this.adapterLookups.inc({ result: residentOnWorker ? 'hit' : 'miss' });
  }

  /** Re-picks the labelled tasks; a demoted task's series disappear (its later traffic counts as "other"). */
  rerank(): Rerank {
    const result = this.labeler.rerank();
    for (const task of result.demoted) {
      for (const m of this.registry.withLabel('task')) m.removeWhere('task', task);
      this.met.delete(task);
    }
    return result;
  }

  setWorkers(workers: readonly WorkerView[]): void {
    for (const g of [this.up, this.queue, this.running, this.inFlight, this.kvUsed, this.kvTotal, this.steps, this.resident, this.residentTask]) g.reset();
    for (const w of workers) {
      const worker = w.addr;
      this.up.set({ worker }, w.ready ? 1 : 0);
      this.queue.set({ worker }, w.waiting);
      this.running.set({ worker }, w.running);
      this.inFlight.set({ worker }, w.inFlight);
      this.kvUsed.set({ worker }, w.kvUsed ?? 0);
      this.kvTotal.set({ worker }, w.kvBlocksTotal);
      this.steps.set({ worker }, w.stepsPerS);
      this.resident.set({ worker }, w.residentAdapters.length);
      for (const task of w.residentAdapters) if (this.labeler.isLabelled(task)) this.residentTask.set({ worker, task }, 1);
    }
    this.labelled.set({}, this.labeler.labelledTasks.length);
  }

  setJobs(jobs: readonly JobView[]): void {
    this.jobProgress.reset();
    const open = jobs.filter((j) => !FINISHED_JOB.test(j.status));
    for (const j of open) {
      const task = this.labeler.peek(j.task) === OTHER && open.length > 20 ? OTHER : j.task;
      this.jobProgress.set({ task, stage: j.stage ?? 'unknown' }, j.fraction ?? 0);
    }
  }
}

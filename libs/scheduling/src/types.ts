/** Public data types of the scheduling library: requests in, worker capacities in, decisions out. */

/** A request as the gateway (or the simulator) hands it to the scheduler. Output length is unknown. */
export interface RequestSpec {
  readonly id: string;
  /** Task (= LoRA adapter) name. */
  readonly task: string;
  readonly promptTokens: number;
  /** Arrival time in seconds on the caller's clock. */
  readonly arrivalS: number;
  /** Prompt text, for predictors that read it (optional). */
  readonly prompt?: string;
}

/** Per-task service-level objective. A request meets it when both bounds hold. */
export interface Slo {
  /** Time to first token, seconds. */
  readonly ttftS: number;
  /** Mean time per output token after the first, seconds. */
  readonly tpotS: number;
}

/** What a worker can hold; sent at start-up and whenever it changes. */
export interface WorkerState {
  readonly id: string;
  /** KV cache capacity in blocks. */
  readonly kvBlocksTotal: number;
  /** Tokens per KV block. */
  readonly blockSize: number;
  /** Most requests decoded together in one step. */
  readonly maxBatchRows: number;
  /** Most prompt tokens prefilled in one step (a single longer prompt is still admitted alone). */
  readonly maxPrefillTokens: number;
  /** Measured decode-step cost; when given, the work-conserving fill keeps steps within the TPOT SLO. */
  readonly stepCost?: StepCost;
}

/** Linear decode-step time model of a worker: base + rows + distinct adapters + resident KV tokens. */
export interface StepCost {
  readonly baseS: number;
  readonly decodeRowS: number;
  readonly adapterS: number;
  readonly kvTokenS: number;
  /** Seconds per prefilled prompt token (optional; lets the step budget account for prefill time). */
  readonly prefillTokenS?: number;
  /** Fixed seconds of a step that prefills anything (optional). */
  readonly prefillStepS?: number;
}

export type Decision =
  /** Start (or restart after preemption) a request on a worker: prefill `prefillTokens` then decode. */
  | { readonly kind: 'admit'; readonly requestId: string; readonly workerId: string; readonly prefillTokens: number }
  /** Drop a request's KV on the worker; it goes back to its queue and is recomputed later. */
  | { readonly kind: 'preempt'; readonly requestId: string; readonly workerId: string }
  /** Give up on a request that can no longer meet its SLO (only with `abortHopeless`). */
  | { readonly kind: 'abort'; readonly requestId: string; readonly reason: 'hopeless' | 'exceeds-kv' };

/** Result of one `schedule` call for one worker. */
export interface StepPlan {
  readonly workerId: string;
  /** In the order they were taken: aborts, preemptions, admissions. */
  readonly decisions: readonly Decision[];
  /** Every request resident on the worker after the decisions; all of them run in the next step. */
  readonly batch: readonly string[];
}

/** Summary of a finished request, as returned by `Scheduler.onFinish`. */
export interface RequestOutcome {
  readonly id: string;
  readonly task: string;
  readonly outputTokens: number;
  readonly ttftS: number;
  readonly tpotS: number;
  readonly latencyS: number;
  readonly metSlo: boolean;
  readonly preemptions: number;
}

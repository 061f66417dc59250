/**
 * Served steps as the gateway sees them: rebuilds one worker's engine steps from the stream of token deltas
 * and measures each step's wall time, gRPC, engine loop, gateway and CPU contention included. Pure: the
 * caller passes the clock.
 *
 * A worker step ends with one delta per sampled row, sent in one burst. A delta opens a new step when
 *   (a) its request already has a delta in the current step (a row gets one token per step), or
 *   (b) its run was admitted after the current step's first delta arrived (the worker cannot have had it
 *       when that step began), or
 *   (c) more than `gapS` passed since the current step's last delta (optional; off by default).
 * The wall time of step k is the time between the first deltas of steps k-1 and k; it is recorded only when
 * the worker had work in flight after step k-1 (no idle gap in it). Its shape, in the simulator's terms
 * (libs/sim stepTime): rows whose delta is the first of their run are prefills (prefill tokens = the
 * run's prompt, as the worker reports it), the rest decode rows; distinct tasks; KV = each row's prompt +
 * tokens generated before the step.
 */

export interface ServedStep {
  /** Wall time of the step as the gateway saw it (seconds). */
  readonly wallS: number;
  readonly prefillTokens: number;
  readonly decodeRows: number;
  readonly adapters: number;
  readonly kvTokens: number;
  /** Gateway clock when the step's first delta arrived. */
  readonly atS: number;
  /** Requests waiting in the gateway when the step's first delta arrived (diagnostic; not a cost term). */
  readonly queued?: number;
}

/** One token delta of one request run. */
export interface DeltaRow {
  readonly id: string;
  readonly task: string;
  /** Prompt tokens of this run (the worker's count; a resumed run's prompt includes its earlier output). */
  readonly promptTokens: number;
  /** Tokens generated in this run so far, this delta's included. */
  readonly completionTokens: number;
  /** Tokens in this delta (usually 1). */
  readonly tokens: number;
  /** Last delta of the run. */
  readonly finished: boolean;
}

interface Group {
  readonly firstS: number;
  readonly queued: number | undefined;
  lastS: number;
  readonly ids: Set<string>;
  readonly tasks: Set<string>;
  prefillTokens: number;
  decodeRows: number;
  kvTokens: number;
  /** Work was in flight on the worker after this step's last delta. */
  busyAfter: boolean;
}

export interface ServedStepsOptions {
  /** Rule (c): a silence longer than this starts a new step (default: never). */
  readonly gapS?: number;
}

export class ServedSteps {
  /** Request id -> gateway time its run was admitted; removed when the run ends. */
  private readonly runs = new Map<string, { admittedS: number; seen: boolean }>();
  private current: Group | undefined;
  private previous: { firstS: number; busyAfter: boolean } | undefined;
  private readonly gapS: number;

  constructor(opts: ServedStepsOptions = {}) {
    this.gapS = opts.gapS ?? Number.POSITIVE_INFINITY;
  }

  /** A run of `id` was sent to the worker at `nowS`. */
  admitted(id: string, nowS: number): void {
    this.runs.set(id, { admittedS: nowS, seen: false });
  }

  /** The run of `id` ended without a final delta (aborted, preempted, failed). */
  ended(id: string): void {
    this.runs.delete(id);
    if (this.current !== undefined) this.current.busyAfter = this.runs.size > 0;
  }

  /** Requests in flight on the worker, as far as the gateway knows. */
  get inFlight(): number {
    return this.runs.size;
  }

  /**
   * Feeds one delta received at `nowS` (`queued`: requests waiting in the gateway then); returns the step it
   * closed, if that step's wall time is known.
   */
  delta(nowS: number, row: DeltaRow, queued?: number): ServedStep | undefined {
    const run = this.runs.get(row.id);
    let closed: ServedStep | undefined;
    const g = this.current;
    if (g === undefined || g.ids.has(row.id) || (run !== undefined && run.admittedS > g.firstS) || nowS - g.lastS > this.gapS) {
      closed = this.close();
      this.current = { firstS: nowS, queued, lastS: nowS, ids: new Set(), tasks: new Set(), prefillTokens: 0, decodeRows: 0, kvTokens: 0, busyAfter: false };
    }
    const c = this.current as Group;
    c.lastS = nowS;
    c.ids.add(row.id);
    c.tasks.add(row.task);
    const before = Math.max(0, row.completionTokens - row.tokens);
    const firstOfRun = run !== undefined ? !run.seen : before === 0;
    if (firstOfRun) c.prefillTokens += row.promptTokens;
    else c.decodeRows += 1;
    c.kvTokens += row.promptTokens + before;
    if (run !== undefined) run.seen = true;
    if (row.finished) this.runs.delete(row.id);
    c.busyAfter = this.runs.size > 0;
    return closed;
  }

  private close(): ServedStep | undefined {
    const g = this.current;
    if (g === undefined) return undefined;
    const prev = this.previous;
    this.previous = { firstS: g.firstS, busyAfter: g.busyAfter };
    this.current = undefined;
    if (prev === undefined || !prev.busyAfter || !(g.firstS > prev.firstS)) return undefined;
    const step = { wallS: g.firstS - prev.firstS, prefillTokens: g.prefillTokens, decodeRows: g.decodeRows, adapters: g.tasks.size, kvTokens: g.kvTokens, atS: g.firstS };
    return g.queued === undefined ? step : { ...step, queued: g.queued };
  }
}

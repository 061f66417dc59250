/**
 * INLAID_COST_FIT: the workers' step cost measured from the steps the gateway serves (no Nest, no timers).
 * Per worker, token deltas are grouped into engine steps and timed (@inlaid/scheduling ServedSteps), and an
 * online NNLS fit of the step-cost terms runs over a sliding window (OnlineCostFit). With `online` the fit
 * replaces INLAID_COST_MODEL's step cost once it has `minSteps` steps (the file, if any, is the prior until
 * then); with `measure` it is only measured and exported. The fit is exported as a calibration file
 * (libs/sim/calibration format, with its held-out error and provenance) for the simulator.
 */
import {
  costModelFileOf,
  CostTerms,
  DeltaRow,
  FitCapacity,
  FittedCostModelFile,
  OnlineCostFit,
  OnlineCostFitOptions,
  ServedSteps,
  StepCost,
  stepCostOfTerms,
} from '@inlaid/scheduling';

/** What the Dispatcher reports about runs on each worker link. */
export interface StepObserver {
  admitted(addr: string, runId: string, nowS: number): void;
  delta(addr: string, nowS: number, row: DeltaRow, queued?: number): void;
  ended(addr: string, runId: string): void;
  workerGone(addr: string): void;
}

interface PerWorker {
  readonly steps: ServedSteps;
  readonly fit: OnlineCostFit;
}

export class ServedCost implements StepObserver {
  private readonly workers = new Map<string, PerWorker>();

  /**
   * `planQuantile`: the step cost handed to the scheduler is the mean fit scaled by this quantile of served /
   * predicted step time (so it bounds that share of steps); undefined = the mean fit. Exports stay the mean fit.
   */
  constructor(
    private readonly options: Partial<OnlineCostFitOptions> = {},
    private readonly planQuantile?: number,
  ) {}

  private of(addr: string): PerWorker {
    let w = this.workers.get(addr);
    if (w === undefined) {
      w = { steps: new ServedSteps(), fit: new OnlineCostFit(this.options) };
      this.workers.set(addr, w);
    }
    return w;
  }

  admitted(addr: string, runId: string, nowS: number): void {
    this.of(addr).steps.admitted(runId, nowS);
  }

  delta(addr: string, nowS: number, row: DeltaRow, queued?: number): void {
    const w = this.of(addr);
    const s = w.steps.delta(nowS, row, queued);
    if (s !== undefined) w.fit.add(s);
  }

  ended(addr: string, runId: string): void {
    this.workers.get(addr)?.steps.ended(runId);
  }

  /** The link went down: its runs are gone; the fit is kept (the same worker usually comes back). */
  workerGone(addr: string): void {
    const w = this.workers.get(addr);
    if (w !== undefined) this.workers.set(addr, { steps: new ServedSteps(), fit: w.fit });
  }

  /** The fitted step cost of `addr` to plan with, once the fit has enough steps (scaled: see planQuantile). */
  stepCost(addr: string): StepCost | undefined {
    const fit = this.workers.get(addr)?.fit;
    const t = fit?.current();
    if (fit === undefined || t === undefined) return undefined;
    const k = this.planQuantile === undefined ? 1 : (fit.ratioQuantile(this.planQuantile) ?? 1);
    return stepCostOfTerms(Object.fromEntries(Object.entries(t).map(([n, v]) => [n, v * k])) as unknown as CostTerms);
  }

  stepsSeen(addr: string): number {
    return this.workers.get(addr)?.fit.stepsSeen ?? 0;
  }

  addrs(): string[] {
    return [...this.workers.keys()];
  }

  /** The calibration file of `addr`'s current window, or undefined before `minSteps` steps. */
  exportFile(addr: string, cap: FitCapacity, slo: { ttft_s: number; tpot_s: number }, context: string, now: Date, withPoints = false): FittedCostModelFile | undefined {
    const w = this.workers.get(addr);
    const report = w?.fit.report();
    if (w === undefined || report === undefined) return undefined;
    const label = `served-${addr.replace(/[^A-Za-z0-9]+/g, '-')}`;
    return costModelFileOf(report, cap, slo, { label, dateUtc: now.toISOString(), worker: addr, context, spanS: report.toS - report.fromS }, withPoints ? w.fit.steps() : undefined);
  }
}

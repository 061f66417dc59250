/** Assembles the dashboard's JSON views from the rollup queries, the worker links and the jobs table. */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { readTargets } from '../metrics/slo-targets';
import { targetsFor } from '../metrics/slo';
import { WorkersService } from '../workers/workers.service';
import { ALL_TASKS, DashboardQueries, ErrorRow } from './dashboard.queries';
import { JobsView, readJobs } from './task-jobs';
import { emptyHistograms, histogramsByTask, sumRows, TaskStats, toTaskStats, worstFirst } from './task-stats';
import { RollupRetentionService } from './rollup-retention.service';
import { chartStep, planQuery, Precision, stepStarts, TimeRange } from './time-range';
import { toWorkerView, WorkerView } from './worker-view';

export interface Overview {
  /**
   * The range answered: up to 3 h to the minute (within minute-rollup and record retention), others widened
   * to whole hours, or to whole days where they start before the hour rollups' retention.
   */
  readonly range: { readonly from: string; readonly to: string };
  readonly precision: Precision;
  readonly defaults: { readonly ttftMs: number; readonly tpotMs: number };
  readonly overall: TaskStats;
  readonly taskCount: number;
  /** Worst first, at most `limit`. */
  readonly tasks: readonly TaskStats[];
}

export interface SeriesPoint {
  readonly t: string;
  readonly requests: number;
  readonly requestsPerS: number;
  readonly tokensOutPerS: number;
  readonly errors: number;
  readonly sloAttainment: number | null;
  readonly meanQueueDepth: number;
}

export interface Series {
  readonly task: string | null;
  readonly stepS: number;
  readonly points: readonly SeriesPoint[];
}

@Injectable()
export class DashboardService {
  private readonly queries: DashboardQueries;

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(RollupRetentionService) private readonly retention: RollupRetentionService,
  ) {
    this.queries = new DashboardQueries(db);
  }

  /**
   * Sums of every task rank the tasks (alongside, the all-tasks histogram is read); latency histograms are
   * then read for the `limit` tasks shown only (percentiles do not take part in the ranking).
   */
  async overview(range: TimeRange, limit: number): Promise<Overview> {
    const plan = planQuery(range, this.retention.floors());
    const [sums, targets, overallHist] = await Promise.all([
      this.queries.taskSums(plan),
      readTargets(this.db),
      this.queries.latencyHistograms(plan, []),
    ]);
    const rangeMs = plan.range.to.getTime() - plan.range.from.getTime();
    const ranked = sums
      .map((s) => toTaskStats(s, emptyHistograms(), targetsFor(targets, s.task), rangeMs))
      .sort(worstFirst)
      .slice(0, limit);
    const shown = await this.queries.latencyHistograms(plan, ranked.map((t) => t.task), false);
    const hists = histogramsByTask([...overallHist, ...shown]);
    const bySum = new Map(sums.map((s) => [s.task, s]));
    const tasks = ranked.map((t) => {
      const s = bySum.get(t.task);
      return s === undefined ? t : toTaskStats(s, hists.get(t.task) ?? emptyHistograms(), t.targets, rangeMs);
    });
    const overall = toTaskStats(sumRows('(all)', sums), hists.get(ALL_TASKS) ?? emptyHistograms(), targets.defaults, rangeMs);
    return {
      range: { from: plan.range.from.toISOString(), to: plan.range.to.toISOString() },
      precision: plan.precision,
      defaults: { ttftMs: targets.defaults.ttftMs, tpotMs: targets.defaults.tpotMs },
      overall,
      taskCount: sums.length,
      tasks,
    };
  }

  async series(range: TimeRange, task: string | undefined): Promise<Series> {
    const { stepS, resolutionS } = chartStep(range, 120, this.retention.floors());
    const rows = await this.queries.series(range, stepS, resolutionS, task);
    const byTime = new Map(rows.map((r) => [new Date(r.t).getTime(), r]));
    const points = stepStarts(range, stepS).map((t): SeriesPoint => {
      const r = byTime.get(t.getTime());
      const requests = r?.requests ?? 0;
      return {
        t: t.toISOString(),
        requests,
        requestsPerS: requests / stepS,
        tokensOutPerS: (r?.tokensOut ?? 0) / stepS,
        errors: r?.errors ?? 0,
        sloAttainment: r !== undefined && r.sloEligible > 0 ? r.sloMet / r.sloEligible : null,
        meanQueueDepth: (r?.ttftSumMs ?? 0) / (stepS * 1000),
      };
    });
    return { task: task ?? null, stepS, points };
  }

  workerViews(): WorkerView[] {
    return this.workers.snapshots().map(toWorkerView);
  }

  jobs(): Promise<JobsView> {
    return readJobs(this.db);
  }

  errors(range: TimeRange, limit: number): Promise<ErrorRow[]> {
    return this.queries.recentErrors(range, limit);
  }
}

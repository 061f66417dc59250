/** Assembles the dashboard's JSON views from the rollup queries, the worker links and the jobs table. */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { readTargets } from '../metrics/slo-targets';
import { targetsFor } from '../metrics/slo';
import { WorkersService } from '../workers/workers.service';
import { DashboardQueries, ErrorRow } from './dashboard.queries';
import { JobsView, readJobs } from './task-jobs';
import { emptyHistograms, Histograms, sumHistograms, sumRows, TaskStats, toTaskStats, worstFirst } from './task-stats';
import { chartStep, planQuery, stepStarts, TimeRange } from './time-range';
import { toWorkerView, WorkerView } from './worker-view';

export interface Overview {
  /** The range answered: short ones exactly, long ones widened to whole hours. */
  readonly range: { readonly from: string; readonly to: string };
  readonly source: 'raw' | 'rollup';
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
  ) {
    this.queries = new DashboardQueries(db);
  }

  async overview(range: TimeRange, limit: number): Promise<Overview> {
    const plan = planQuery(range);
    const [sums, hists, targets] = await Promise.all([
      this.queries.taskSums(plan),
      this.queries.taskHistograms(plan),
      readTargets(this.db),
    ]);
    const byTask = new Map<string, Histograms>();
    for (const h of hists) {
      let entry = byTask.get(h.task);
      if (entry === undefined) byTask.set(h.task, (entry = emptyHistograms()));
      entry[h.metric][h.bucket] = h.count;
    }
    const rangeMs = plan.range.to.getTime() - plan.range.from.getTime();
    const tasks = sums
      .map((s) => toTaskStats(s, byTask.get(s.task) ?? emptyHistograms(), targetsFor(targets, s.task), rangeMs))
      .sort(worstFirst);
    const overall = toTaskStats(sumRows('(all)', sums), sumHistograms(byTask.values()), targets.defaults, rangeMs);
    return {
      range: { from: plan.range.from.toISOString(), to: plan.range.to.toISOString() },
      source: plan.kind,
      defaults: { ttftMs: targets.defaults.ttftMs, tpotMs: targets.defaults.tpotMs },
      overall,
      taskCount: tasks.length,
      tasks: tasks.slice(0, limit),
    };
  }

  async series(range: TimeRange, task: string | undefined): Promise<Series> {
    const { stepS, resolutionS } = chartStep(range);
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

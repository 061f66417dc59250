/**
 * GET /dashboard (the page) and its JSON API under /dashboard/api: overview (overall + tasks worst first),
 * series (chart points), workers, jobs, errors. Ranges: `range=15m|1h|6h|24h|7d` or `from`/`to` (ISO).
 */
import { BadRequestException, Controller, Get, Header, Inject, Query } from '@nestjs/common';
import { DashboardService } from './dashboard.service';
import { dashboardHtml } from './page/page-html';
import { parseRange, RangeError400, TimeRange } from './time-range';

interface RangeQuery {
  range?: string;
  from?: string;
  to?: string;
  task?: string;
  limit?: string;
}

function rangeOf(q: RangeQuery): TimeRange {
  try {
    return parseRange(q, new Date());
  } catch (err) {
    if (err instanceof RangeError400) throw new BadRequestException(err.message);
    throw err;
  }
}

function limitOf(raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new BadRequestException(`limit: expected an integer in 1..${max}, got "${raw}"`);
  return n;
}

@Controller('dashboard')
export class DashboardController {
  private readonly html = dashboardHtml();

  constructor(@Inject(DashboardService) private readonly dashboard: DashboardService) {}

  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  page(): string {
    return this.html;
  }

  @Get('api/overview')
  overview(@Query() q: RangeQuery) {
    return this.dashboard.overview(rangeOf(q), limitOf(q.limit, 50, 5000));
  }

  @Get('api/series')
  series(@Query() q: RangeQuery) {
    const task = q.task === undefined || q.task === '' ? undefined : q.task;
    return this.dashboard.series(rangeOf(q), task);
  }

  @Get('api/workers')
  workers() {
    return { workers: this.dashboard.workerViews() };
  }

  @Get('api/jobs')
  jobs() {
    return this.dashboard.jobs();
  }

  @Get('api/errors')
  async errors(@Query() q: RangeQuery) {
    return { errors: await this.dashboard.errors(rangeOf(q), limitOf(q.limit, 20, 200)) };
  }
}

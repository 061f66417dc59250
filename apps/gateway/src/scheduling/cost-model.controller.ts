/**
 * GET /dashboard/api/cost-model[?worker=ADDR][&points=1]: the served-step cost fit (INLAID_COST_FIT) of one
 * worker as a calibration file (the format of libs/sim/calibration/*.json, for `npm run sim -- --cost-model`),
 * with its held-out error and provenance; `points=1` adds the window's steps. 404 while the fit is off or
 * has too few steps. Needs the dashboard:read scope, like the rest of /dashboard.
 */
import { Controller, Get, Header, Inject, NotFoundException, Query } from '@nestjs/common';
import type { FittedCostModelFile } from '@inlaid/scheduling';
import { SchedulingService } from './scheduling.service';

@Controller('dashboard/api')
export class CostModelController {
  constructor(@Inject(SchedulingService) private readonly scheduling: SchedulingService) {}

  @Get('cost-model')
  @Header('Cache-Control', 'no-store')
  costModel(@Query('worker') worker?: string, @Query('points') points?: string): FittedCostModelFile {
    if (this.scheduling.served === null) throw new NotFoundException('The served-step cost fit is off (set INLAID_COST_FIT=measure or online).');
    const file = this.scheduling.costModelFile(worker, points === '1' || points === 'true');
    if (file === undefined) throw new NotFoundException('No served-step cost fit yet: too few steps measured.');
    return file;
  }
}

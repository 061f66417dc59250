/** GET /healthz (the process is alive) and GET /readyz (a worker has the model loaded: 200, else 503). */
import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import { RedisService } from '../redis/redis.service';
import { WorkersService } from '../workers/workers.service';

@Controller()
export class HealthController {
  constructor(
    @Inject(WorkersService) private readonly workers: WorkersService,
    @Inject(RedisService) private readonly redis: RedisService,
  ) {}

  @Get('healthz')
  healthz() {
    return { status: 'ok' };
  }

  @Get('readyz')
  readyz(@Res() res: Response): void {
    const ready = this.workers.anyReady;
    res.status(ready ? 200 : 503).json({
      status: ready ? 'ready' : 'not_ready',
      redis: this.redis.connected,
      workers: this.workers.snapshots(),
    });
  }
}

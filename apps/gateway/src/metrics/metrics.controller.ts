/** GET /metrics: the gateway's metrics in the Prometheus text format. */
import { Controller, Get, Header, Inject } from '@nestjs/common';
import { MetricsService } from './metrics.service';
import { PROMETHEUS_CONTENT_TYPE } from './prom-text';

@Controller()
export class MetricsController {
  constructor(@Inject(MetricsService) private readonly metrics: MetricsService) {}

  @Get('metrics')
  @Header('Content-Type', PROMETHEUS_CONTENT_TYPE)
  @Header('Cache-Control', 'no-store')
  scrape(): string {
    return this.metrics.render();
  }
}

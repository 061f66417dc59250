/** MetricsService before its first read of the SLO targets (Postgres unreachable at start): the configured defaults. */
import { Logger } from '@nestjs/common';
import { GatewayConfig, parseSchedulingConfig } from '@inlaid/config';
import type { RequestRecord } from '@inlaid/db';
import type { DataSource } from 'typeorm';
import type { RecordsService } from '../records/records.service';
import type { WorkersService } from '../workers/workers.service';
import { MetricsService } from './metrics.service';

it('judges requests against INLAID_SLO_TTFT_MS / TPOT_MS until it reads the targets', async () => {
  const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  const config = { scheduling: parseSchedulingConfig({ INLAID_SLO_TTFT_MS: '2000', INLAID_SLO_TPOT_MS: '80' }) } as unknown as GatewayConfig;
  const unreachable = { query: async () => Promise.reject(new Error('connect ECONNREFUSED')) } as unknown as DataSource;
  const svc = new MetricsService(config, unreachable, { onRecord: () => undefined } as unknown as RecordsService, { snapshots: () => [] } as unknown as WorkersService);
  try {
    await svc.onModuleInit();
    expect(warn.mock.calls.some(([m]) => String(m).includes('ECONNREFUSED'))).toBe(true);
    const arrival = new Date(Date.now() - 10_000);
    const at = (ms: number) => new Date(arrival.getTime() + ms);
    const rec = (id: string, ttftMs: number, tpotMs: number): RequestRecord =>
      ({ id, task: 'sql', api: 'completions', arrival, firstToken: at(ttftMs), finish: at(ttftMs + 10 * tpotMs), tokensIn: 4, tokensOut: 11, status: 'completed', finishReason: 'length', error: null, worker: null });
    svc.observe(rec('a', 1500, 70)); // within 2000 / 80 ms (the old hard-coded 1000 / 100 ms missed it)
    svc.observe(rec('b', 1500, 90)); // over the 80 ms TPOT (the old 100 ms met it)
    const text = svc.render();
    expect(text).toContain('inlaid_slo_requests_total{task="sql",result="met"} 1');
    expect(text).toContain('inlaid_slo_requests_total{task="sql",result="missed"} 1');
  } finally {
    svc.onModuleDestroy();
    warn.mockRestore();
  }
});

/** One structured log line per finished request, with the id the worker logs and the HTTP request id. */
import { Inject, Injectable, Logger, OnModuleInit } from '@nestjs/common';
import type { RequestRecord } from '@inlaid/db';
import { timings } from '../metrics/slo';
import { RecordsService } from '../records/records.service';
import { currentRequestContext } from './request-context';

export function requestLogFields(row: RequestRecord, httpRequestId: string | null): Record<string, unknown> {
  const t = timings(row);
  return {
    event: 'request',
    msg: `${row.status} ${row.task}`,
    request_id: row.id,
    http_request_id: httpRequestId,
    task: row.task,
    api: row.api,
    status: row.status,
    finish_reason: row.finishReason,
    worker: row.worker,
    tokens_in: row.tokensIn,
    tokens_out: row.tokensOut,
    ttft_ms: t.ttftMs,
    tpot_ms: t.tpotMs === null ? null : Math.round(t.tpotMs * 100) / 100,
    latency_ms: t.latencyMs,
    error: row.error,
  };
}

@Injectable()
export class RequestLogService implements OnModuleInit {
  private readonly logger = new Logger('Request');

  constructor(@Inject(RecordsService) private readonly records: RecordsService) {}

  onModuleInit(): void {
    this.records.onRecord((row) => {
      const fields = requestLogFields(row, currentRequestContext()?.httpRequestId ?? null);
      if (row.status === 'failed') this.logger.warn(fields);
      else this.logger.log(fields);
    });
  }
}

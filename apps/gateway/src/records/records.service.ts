/**
 * Writes request records to Postgres off the response path: rows are buffered and inserted in batches
 * by a timer. A failed batch (Postgres down) goes back into the buffer and is retried every second; the
 * buffer holds at most MAX_BUFFERED rows (about 100 MB at worst), beyond which the oldest are dropped and
 * logged. Each row gets its own key (record_id) when it is added, and inserts are idempotent on it (ON CONFLICT DO
 * NOTHING), so a retried batch that had in fact been written is harmless; a request id may recur (a client reusing
 * the request_id of a request that ended), and each such request keeps its row. A batch refused for its data (SQLSTATE class 22 or 23: a bad row would
 * refuse it forever, and block every row behind it) is written row by row instead, and the rows Postgres
 * refuses are dropped with a warning. Rows still buffered when the process dies are lost.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { RecordBuffer } from './record-buffer';

export type RecordRow = RequestRecord;
export type RecordListener = (row: RecordRow) => void;

const MAX_ROWS = 200;
const MAX_AGE_MS = 250;
const TICK_MS = 50;
const RETRY_MS = 1_000;
export const MAX_BUFFERED = 100_000;

/** A Postgres data exception (22xxx) or integrity violation (23xxx): retrying the same row cannot succeed. */
function isDataError(err: unknown): boolean {
  const e = err as { code?: unknown; driverError?: { code?: unknown } } | null;
  const code = e?.code ?? e?.driverError?.code;
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code);
}

@Injectable()
export class RecordsService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Records');
  private readonly buffer = new RecordBuffer<RecordRow>(MAX_ROWS, MAX_AGE_MS, MAX_BUFFERED);
  private reportedDrops = 0;
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private readonly listeners: RecordListener[] = [];

  constructor(@Inject(DataSource) private readonly dataSource: DataSource) {}

  onModuleInit(): void {
    this.timer = setInterval(() => {
      if (this.buffer.due(Date.now())) void this.flush();
    }, TICK_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.writing;
    // Drain batch by batch; stop at the first batch that fails (Postgres down: those rows are lost).
    while (this.buffer.size > 0) {
      const before = this.buffer.size;
      await this.flush();
      if (this.buffer.size >= before) break;
    }
  }

  /** Buffers `row` (under a key of its own: `recordId`, kept if it has one) and hands it to the listeners. */
  add(record: RecordRow): void {
    const row = record.recordId === undefined ? { ...record, recordId: randomUUID() } : record;
    this.buffer.add(row, Date.now());
    for (const listener of this.listeners) {
      try {
        listener(row);
      } catch (err) {
        this.logger.error(`record listener failed: ${(err as Error).message}`);
      }
    }
  }

  /** Calls `listener` with every record as it is added (metrics, request logs); synchronous, must not throw. */
  onRecord(listener: RecordListener): void {
    this.listeners.push(listener);
  }

  /** Rows waiting to be written (kept in memory while Postgres is unreachable). */
  get buffered(): number {
    return this.buffer.size;
  }

  /** Writes one batch of what is buffered; resolves once it is written (or requeued after an error). */
  flush(): Promise<void> {
    const rows = this.buffer.take();
    if (rows.length === 0) return this.writing;
    this.writing = this.writing.then(() => this.insert(rows));
    return this.writing;
  }

  /**
   * Inserts `rows`; one already written (a batch retried after a write whose reply was lost) is skipped. The rows are
   * not updated from the insert's RETURNING: TypeORM maps its rows back by position, which the skipped ones shift
   * (a later row's record_id would be written onto an earlier row).
   */
  private async write(rows: RecordRow[]): Promise<void> {
    await this.dataSource.getRepository(RequestRecord).createQueryBuilder().insert().values(rows).orIgnore().updateEntity(false).execute();
  }

  private requeue(rows: RecordRow[], err: unknown): void {
    const now = Date.now();
    this.buffer.requeue(rows, now, now + RETRY_MS);
    this.logger.warn(`postgres write failed, ${this.buffer.size} request records buffered: ${(err as Error).message}`);
  }

  private async insert(rows: RecordRow[]): Promise<void> {
    try {
      await this.write(rows);
    } catch (err) {
      if (isDataError(err)) await this.insertEach(rows);
      else this.requeue(rows, err);
    }
    if (this.buffer.dropped > this.reportedDrops) {
      this.logger.error(`request record buffer full: ${this.buffer.dropped - this.reportedDrops} oldest records dropped`);
      this.reportedDrops = this.buffer.dropped;
    }
  }

  /** After a data error: each row alone, dropping those refused for their data; a connection error requeues the rest. */
  private async insertEach(rows: RecordRow[]): Promise<void> {
    for (let i = 0; i < rows.length; i++) {
      try {
        await this.write([rows[i]]);
      } catch (err) {
        if (!isDataError(err)) return this.requeue(rows.slice(i), err);
        this.logger.warn(`request record ${JSON.stringify(rows[i].id)} dropped, postgres refused it: ${(err as Error).message}`);
      }
    }
  }
}

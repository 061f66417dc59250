/**
 * Writes request records to Postgres off the response path: rows are buffered and inserted in batches
 * by a timer; a failed batch is logged and dropped, never surfaced to clients.
 */
import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { RequestRecord } from '@inlaid/db';
import { DataSource } from 'typeorm';
import { RecordBuffer } from './record-buffer';

export type RecordRow = RequestRecord;

const MAX_ROWS = 200;
const MAX_AGE_MS = 250;
const TICK_MS = 50;

@Injectable()
export class RecordsService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Records');
  private readonly buffer = new RecordBuffer<RecordRow>(MAX_ROWS, MAX_AGE_MS);
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(@Inject(DataSource) private readonly dataSource: DataSource) {}

  onModuleInit(): void {
    this.timer = setInterval(() => {
      if (this.buffer.due(Date.now())) void this.flush();
    }, TICK_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.flush();
  }

  add(row: RecordRow): void {
    this.buffer.add(row, Date.now());
  }

  /** Inserts everything buffered so far; resolves once it is written (or dropped after an error). */
  flush(): Promise<void> {
    const rows = this.buffer.take();
    if (rows.length === 0) return this.writing;
    this.writing = this.writing.then(() => this.insert(rows));
    return this.writing;
  }

  private async insert(rows: RecordRow[]): Promise<void> {
    try {
      await this.dataSource.getRepository(RequestRecord).createQueryBuilder().insert().values(rows).orIgnore().execute();
    } catch (err) {
      this.logger.error(`dropped ${rows.length} request records: ${(err as Error).message}`);
    }
  }
}

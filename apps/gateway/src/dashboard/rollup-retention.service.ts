/**
 * Sweeps minute rollups, hour rollups and request records past their retention (INLAID_ROLLUP_MINUTE_DAYS,
 * INLAID_ROLLUP_HOUR_DAYS, INLAID_RECORD_DAYS) at start-up and every INLAID_ROLLUP_SWEEP_S, in batches so no
 * statement holds locks for long. A failed sweep (Postgres down) is logged and tried again at the next tick;
 * it never affects serving.
 */
import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { DataSource } from 'typeorm';
import { GATEWAY_CONFIG } from '../config/config.module';
import { RetentionFloors, retentionFloors, retentionStatements } from './rollup-retention';

const BATCH = 20_000;

export interface SweepResult {
  /** The minute rollups' floor (null: kept forever). */
  readonly floor: Date | null;
  readonly floors: RetentionFloors;
  readonly deleted: Readonly<Record<string, number>>;
}

@Injectable()
export class RollupRetentionService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RollupRetention');
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(GATEWAY_CONFIG) private readonly config: GatewayConfig,
  ) {}

  /** The oldest time the dashboard may read each kind of row for (null: all are kept). */
  floors(now = new Date()): RetentionFloors {
    return retentionFloors(now, this.config.dashboard);
  }

  onApplicationBootstrap(): void {
    const f = this.floors();
    if (f.minute === null && f.hour === null && f.records === null) return;
    const tick = (): void => {
      this.running = this.sweep().catch((err: Error) => this.logger.warn(`rollup retention sweep failed: ${err.message}`));
    };
    tick();
    this.timer = setInterval(tick, this.config.dashboard.sweepS * 1000);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.running;
  }

  /** Deletes every row older than its floor, batch by batch. */
  async sweep(now = new Date()): Promise<SweepResult> {
    const floors = this.floors(now);
    const floor = floors.minute;
    const deleted: Record<string, number> = {};
    for (const st of retentionStatements(floors, BATCH)) {
      deleted[st.table] = 0;
      for (;;) {
        const res: unknown = await this.db.query(st.sql, [...st.params]);
        const n = Array.isArray(res) && typeof res[1] === 'number' ? res[1] : 0;
        deleted[st.table] = (deleted[st.table] ?? 0) + n;
        if (n < BATCH) break;
      }
    }
    const total = Object.values(deleted).reduce((a, b) => a + b, 0);
    if (total > 0) this.logger.log(`retention deleted ${JSON.stringify(deleted)}`);
    return { floor, floors, deleted };
  }
}

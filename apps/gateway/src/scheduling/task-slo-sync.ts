/**
 * Keeps the scheduler's per-task SLOs in step with Postgres (the I/O around task-slos.ts). Every read gives the Scheduler
 * the tasks' own targets (POST /v1/tasks and CreateTask `slo`, written into the task's row when onboarding validates it)
 * and sets slo_defaults to the configured defaults (dashboard/slo-defaults.ts: the dashboard then judges tasks without
 * targets of their own against what the scheduler plans with): written until the row holds them once (this gateway's
 * write succeeded, or found them there); a different value after that (a gateway sharing the database with other
 * INLAID_SLO_* settings) is warned of, once per value, and left: two gateways writing their own back would flip the row
 * every REFRESH_MS. A row the scheduler cannot plan with is warned of once per (task, targets). The two are separate
 * steps: a failed defaults write does not keep the tasks' targets from the scheduler, and the next read tries again.
 * Reads run at start, when a worker lists a task it did not list before (onboarding loads the adapter after its row has
 * the targets; every gateway hears of it on the worker's state stream), and every REFRESH_MS (targets changed in SQL, a missed read). Reads never
 * overlap: one asked for while another runs follows it, and further asks share that one.
 */
import type { Scheduler } from '@inlaid/scheduling';
import type { DataSource } from 'typeorm';
import { writeSloDefaults } from '../dashboard/slo-defaults';
import { ReportedNames } from '../records/reported-names';
import { readSloDefaults, readTaskTargetRows } from './task-slo-rows';
import { SloMs, taskSloMap } from './task-slos';

export const REFRESH_MS = 15_000;

const same = (a: SloMs, b: SloMs): boolean => a.ttftMs === b.ttftMs && a.tpotMs === b.tpotMs;

export class TaskSloSync {
  /** Whether slo_defaults held this gateway's defaults once (a later difference is another gateway's: not written back). */
  private defaultsHeld = false;
  /** The warnings given (a row or slo_defaults value read again every REFRESH_MS is warned of once). */
  private readonly warned = new Set<string>();
  private current: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly served = new ReportedNames();

  constructor(
    private readonly db: DataSource,
    private readonly scheduler: Pick<Scheduler, 'setTaskSlos'>,
    private readonly defaults: SloMs,
    private readonly warn: (message: string) => void,
  ) {}

  /** The first read (awaited: the gateway serves with the tasks' targets), then one every REFRESH_MS. */
  async start(): Promise<void> {
    this.timer = setInterval(() => this.refreshLogged(), REFRESH_MS);
    this.timer.unref();
    await this.refresh();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Reads the tasks' targets again; resolves once a read that began after this call has finished. */
  refresh(): Promise<void> {
    if (this.next !== null) return this.next;
    if (this.current === null) return (this.current = this.read().finally(() => (this.current = null)));
    this.next = this.current.catch(() => undefined).then(() => {
      this.next = null;
      return this.refresh();
    });
    return this.next;
  }

  /** The tasks worker `addr` serves (adapters, models), on each of its reports: a read when it lists a new one. */
  noticeServed(addr: string, tasks: readonly string[]): void {
    if (this.served.report(addr, tasks).length > 0) this.refreshLogged();
  }

  forget(addr: string): void {
    this.served.forget(addr);
  }

  private refreshLogged(): void {
    this.refresh().catch((err: unknown) => this.warn(`task SLOs not refreshed: ${(err as Error).message}`));
  }

  private async read(): Promise<void> {
    await this.syncDefaults().catch((err: unknown) => this.warn(`slo_defaults not checked (tried again in ${REFRESH_MS / 1000} s): ${(err as Error).message}`));
    this.scheduler.setTaskSlos(taskSloMap(await readTaskTargetRows(this.db), this.defaults, (m) => this.warnOnce(m)));
  }

  private warnOnce(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.warn(message);
  }

  private async syncDefaults(): Promise<void> {
    const held = await readSloDefaults(this.db);
    if (held !== undefined && same(held, this.defaults)) {
      this.defaultsHeld = true;
      return;
    }
    if (held !== undefined && this.defaultsHeld) {
      const ms = (s: SloMs) => `${s.ttftMs} / ${s.tpotMs} ms`;
      this.warnOnce(`slo_defaults changed to ${ms(held)} (another gateway's INLAID_SLO_TTFT_MS / TPOT_MS?); this gateway plans with ${ms(this.defaults)} and leaves the row: gateways sharing a database should share these settings`);
      return;
    }
    await writeSloDefaults(this.db, this.defaults);
    this.defaultsHeld = true;
  }
}

/**
 * Keeps the scheduler's per-task SLOs in step with Postgres (the I/O around task-slos.ts). Its first read writes the
 * configured defaults into slo_defaults (dashboard/slo-defaults.ts: the dashboard then judges tasks without targets
 * of their own against what the scheduler plans with); every read gives the Scheduler the tasks' own targets
 * (POST /v1/tasks and CreateTask `slo`, written into the task's row when onboarding validates it). Reads run at start,
 * when a worker lists a task it did not list before (onboarding loads the adapter after its row has the targets; every
 * gateway hears of it on the worker's state stream), and every REFRESH_MS (targets changed in SQL, a missed read).
 * Reads never overlap: one asked for while another runs follows it, and further asks share that one.
 */
import type { Scheduler } from '@inlaid/scheduling';
import type { DataSource } from 'typeorm';
import { writeSloDefaults } from '../dashboard/slo-defaults';
import { SloMs, TaskSloRow, taskSloMap } from './task-slos';

export const REFRESH_MS = 15_000;

export class TaskSloSync {
  private defaultsWritten = false;
  private current: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly served = new Map<string, ReadonlySet<string>>();

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
    const before = this.served.get(addr);
    this.served.set(addr, new Set(tasks));
    if (before === undefined || tasks.some((t) => !before.has(t))) this.refreshLogged();
  }

  forget(addr: string): void {
    this.served.delete(addr);
  }

  private refreshLogged(): void {
    this.refresh().catch((err: unknown) => this.warn(`task SLOs not refreshed: ${(err as Error).message}`));
  }

  private async read(): Promise<void> {
    if (!this.defaultsWritten) {
      await writeSloDefaults(this.db, this.defaults);
      this.defaultsWritten = true;
    }
    const rows: TaskSloRow[] = await this.db.query(
      `SELECT name, slo_ttft_ms AS "ttftMs", slo_tpot_ms AS "tpotMs" FROM tasks WHERE slo_ttft_ms IS NOT NULL OR slo_tpot_ms IS NOT NULL`,
    );
    this.scheduler.setTaskSlos(taskSloMap(rows, this.defaults));
  }
}

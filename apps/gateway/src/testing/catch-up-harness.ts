/**
 * The shared setup of the adapter catch-up specs (adapter-catch-up-digest, adapter-rewrite-onboarding, delete-in-use):
 * two real grpc-js fake workers A and B (adapter-fake-worker.ts) reading one "disk", a WorkersService, WorkerAdminService
 * and AdapterCatchUp (fast retries) over a real TaskStore, and the steps those specs repeat: a vLLM-style load and a
 * DELETE as tasks.service does them, and task locks held as another holder would.
 */
import { randomUUID } from 'node:crypto';
import type { GatewayConfig } from '@inlaid/config';
import type { DataSource } from 'typeorm';
import { AdapterCatchUp } from '../tasks/adapter-catch-up.service';
import { TaskStore } from '../tasks/task-store.service';
import { WorkerAdminService } from '../tasks/worker-admin.service';
import type { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { startFakeWorker, type FakeWorker, type FakeWorkerOptions, type HeldAdapter } from './adapter-fake-worker';
import { eventually } from './eventually';

export class CatchUpHarness {
  a!: FakeWorker;
  b!: FakeWorker;
  workers!: WorkersService;
  admin!: WorkerAdminService;
  store!: TaskStore;
  catchUp!: AdapterCatchUp;

  /** `disk`: path -> the digest of the adapter files there now (what ValidateAdapter and LoadAdapter of that path read). */
  constructor(
    readonly disk: Map<string, string>,
    private readonly db: () => DataSource,
  ) {}

  /** A fake worker on `port` (0: a free one) holding `loaded`, reading the disk. */
  readonly start = (port: number, loaded: Record<string, HeldAdapter> = {}, opts: FakeWorkerOptions = {}): Promise<FakeWorker> => startFakeWorker(this.disk, port, loaded, opts);
  readonly addr = (w: FakeWorker): string => `127.0.0.1:${w.port}`;
  readonly conn = (w: FakeWorker): WorkerConnection | undefined => this.workers.acceptingConnections().find((c) => c.addr === this.addr(w));
  readonly caughtUp = (w: FakeWorker, what: string): Promise<void> => eventually(() => this.conn(w) !== undefined && !this.catchUp.pending(this.addr(w)), what, 5000);
  readonly listed = (): string[] => this.workers.listModels().map((m) => m.id);

  /** A fresh fleet of A and B (in WORKER_ADDRS order), both caught up. */
  async setup(): Promise<void> {
    this.store = new TaskStore(this.db());
    [this.a, this.b] = await Promise.all([this.start(0), this.start(0)]);
    this.workers = new WorkersService({ workerAddrs: [this.addr(this.a), this.addr(this.b)], workerTls: null } as unknown as GatewayConfig);
    this.admin = new WorkerAdminService(this.workers);
    this.catchUp = new AdapterCatchUp(this.workers, this.store, this.admin);
    this.catchUp.retry = { baseMs: 20, maxMs: 50 };
    this.workers.onModuleInit();
    this.catchUp.onModuleInit();
    await this.caughtUp(this.a, 'A up');
    await this.caughtUp(this.b, 'B up');
  }

  /** Stops the catch-up and the links, and the fake workers up now (`fakes`: a spec's, after it restarted them). */
  teardown(...fakes: Array<FakeWorker | undefined>): void {
    this.catchUp?.onModuleDestroy();
    this.workers?.onModuleDestroy();
    for (const w of fakes) w?.server.forceShutdown();
  }

  /** POST /v1/load_lora_adapter as tasks.service does it: the job, the load on every worker, its digest on the row. */
  readonly loadTask = async (task: string, path: string, validated: string | null = null): Promise<string> => {
    const id = randomUUID();
    await this.store.create({ id, task, kind: 'load', status: 'serving', adapterPath: path, calibrationPath: null, slo: null, waitForQuantization: false, message: 'test' });
    await this.store.recordAdapterDigest(id, await this.admin.loadEverywhere(task, path, { validated }));
    return id;
  };

  /** DELETE as tasks.service does it: the job ended and the adapter unloaded from the workers up now. */
  readonly deleteTask = async (task: string): Promise<void> => {
    await this.store.locked(task, async (tx) => {
      const latest = await tx.latest(task);
      await tx.transition(latest?.id ?? '', 'deleted', 'deleted by the client; adapter unloaded');
      await this.admin.unloadEverywhere(task);
    });
  };

  /** Holds the locks of `tasks` (as a load, DELETE or another gateway's catch-up would) until the returned release. */
  readonly holdLocks = async (tasks: string[]): Promise<() => Promise<void>> => {
    const releases: Array<() => void> = [];
    const held = tasks.map((t) => this.store.locked(t, () => new Promise<void>((r) => releases.push(r))));
    await eventually(() => releases.length === tasks.length, 'the locks taken');
    return async () => {
      releases.forEach((r) => r());
      await Promise.all(held);
    };
  };
}

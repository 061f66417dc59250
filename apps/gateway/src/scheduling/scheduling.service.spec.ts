import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GatewayConfig, parseSchedulingConfig } from '@inlaid/config';
import { testDatabase } from '@inlaid/db/testing';
import { worker } from '@inlaid/proto';
import { request, WorkerState } from '@inlaid/scheduling';
import type { DataSource } from 'typeorm';
import type { LinkListener, WorkerConnection } from '../workers/worker-connection';
import type { WorkersService } from '../workers/workers.service';
import { loadStepCost } from './cost-model-file';
import { SchedulingService } from './scheduling.service';

const H200 = join(__dirname, '../../../../libs/sim/calibration/h200-measured.json');

/** A database without tasks (the task SLOs' reads find none). */
const NO_ROWS = { query: async () => [] } as unknown as DataSource;

/** Real SchedulingService and Scheduler, fed by a stand-in worker link that reports one KV cache. */
function serviceWith(env: Record<string, string>, db = NO_ROWS): { service: SchedulingService; received: WorkerState[] } {
  const config = { scheduling: parseSchedulingConfig(env), workerAddrs: ['w1:50051'] } as unknown as GatewayConfig;
  let listener: LinkListener | undefined;
  const workers = { onLink: (l: LinkListener) => (listener = l) } as unknown as WorkersService;
  const service = new SchedulingService(config, workers, db);
  const received: WorkerState[] = [];
  const original = service.dispatcher.scheduler.onWorkerState.bind(service.dispatcher.scheduler);
  service.dispatcher.scheduler.onWorkerState = (s: WorkerState) => {
    received.push(s);
    original(s);
  };
  const state = worker.WorkerState.fromPartial({ workerId: 'w1', totalKvBlocks: 64, freeKvBlocks: 64, blockSize: 16 });
  const conn = { addr: 'w1:50051', ready: true, latestState: state, models: () => [] } as unknown as WorkerConnection;
  listener?.(conn, 'state');
  return { service, received };
}

describe('SchedulingService with INLAID_COST_MODEL', () => {
  it("passes the configured step cost with each worker's capacity", () => {
    const { received } = serviceWith({ INLAID_COST_MODEL: H200 });
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ id: 'w1:50051', kvBlocksTotal: 64, blockSize: 16, stepCost: loadStepCost(H200) });
    expect(received[0].stepCost?.prefillStepS).toBeGreaterThan(0);
  });

  it('passes no step cost without the setting', () => {
    const { received } = serviceWith({});
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ id: 'w1:50051', kvBlocksTotal: 64 });
    expect(received[0]).not.toHaveProperty('stepCost');
  });

  it('fails at start-up on an invalid cost model file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'inlaid-cost-'));
    try {
      const p = join(dir, 'empty.json');
      writeFileSync(p, '{}');
      expect(() => serviceWith({ INLAID_COST_MODEL: p })).toThrow(/INLAID_COST_MODEL: .*empty\.json/);
      expect(() => serviceWith({ INLAID_COST_MODEL: join(dir, 'missing.json') })).toThrow(/INLAID_COST_MODEL: cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SchedulingService and a worker catching up on its adapters', () => {
  it('places no task there that it holds, even when no worker lists it; places it once the hold ends', () => {
    const { service } = serviceWith({});
    const state = worker.WorkerState.fromPartial({ workerId: 'w1', totalKvBlocks: 64, freeKvBlocks: 64, blockSize: 16 });
    let held = true;
    const conn = {
      addr: 'w1:50051', ready: true, latestState: state, models: () => [{ id: 'm', parent: '' }], pendingFor: (t: string) => held && t === 'sql',
    } as unknown as WorkerConnection;
    const placement = service.dispatcher.placement;
    const refresh = (): void => (service as unknown as { refresh(c: WorkerConnection): void }).refresh(conn); // as an 'info' event
    refresh();
    expect(placement.arrive('sql')).toBeUndefined(); // before: w1, the fallback for a task no worker lists (a 404 there)
    expect(placement.arrive('m')).toBe('w1:50051');
    held = false;
    refresh(); // the catch-up released it
    expect(placement.homeOf('sql')).toBe('w1:50051');
  });
});

describe('SchedulingService and the tasks\' own SLOs (real Postgres)', () => {
  const db = testDatabase('inlaid_schedslo');

  it('plans each task against its own SLO from start-up, and writes its defaults for the dashboard', async () => {
    await db().query(`INSERT INTO tasks (name, rank, slo_ttft_ms) VALUES ('tight', 8, 100)`);
    const { service } = serviceWith({ INLAID_SLO_TTFT_MS: '2000', INLAID_SLO_TPOT_MS: '80' }, db());
    await service.onModuleInit();
    service.onApplicationShutdown();
    expect(await db().query(`SELECT ttft_ms, tpot_ms FROM slo_defaults`)).toEqual([{ ttft_ms: 2000, tpot_ms: 80 }]);
    const s = service.dispatcher.scheduler;
    for (const task of ['tight', 'plain']) s.enqueue(request(task, task, 16, 0));
    expect([...s.schedule(0, 'w1:50051').batch].sort()).toEqual(['plain', 'tight']);
    const met = ['tight', 'plain'].map((id) => {
      s.onToken(id, 0.3);
      return s.onFinish(id, 0.3).metSlo;
    });
    expect(met).toEqual([false, true]); // 300 ms to the first token: over tight's 100 ms, within the 2 s default
  });
});

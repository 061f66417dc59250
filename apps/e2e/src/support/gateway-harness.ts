/** Starts the real gateway in-process against a fresh Postgres database; tears both down. */
import { parseConfig } from '@inlaid/config';
import { dropDatabase } from '@inlaid/db';
import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { RunningGateway, startGateway } from '../../../gateway/src/bootstrap';
import { freePort } from './ports';

export interface Harness {
  readonly gateway: RunningGateway;
  readonly databaseUrl: string;
  readonly db: DataSource;
  close(): Promise<void>;
}

/**
 * `pgPort`: where the gateway reaches Postgres (a test proxy in front of 5432); cleanup always uses 5432. Unless
 * `env` names one, the gateway gets a BullMQ prefix of its own (INLAID_QUEUE_PREFIX): its queue workers never
 * take another gateway's onboarding steps (a developer's, or another spec's) from the shared default prefix.
 * A spec whose gateways must share a queue passes the same prefix to each.
 */
export async function startHarness(env: Record<string, string>, pgPort = 5432): Promise<Harness> {
  const name = `inlaid_e2e_${randomBytes(4).toString('hex')}`;
  const databaseUrl = `postgres://postgres@127.0.0.1:${pgPort}/${name}`;
  const queuePrefix = env['INLAID_QUEUE_PREFIX'] ?? `e2e${randomBytes(4).toString('hex')}`;
  const config = parseConfig({ PORT: '0', GRPC_PORT: String(await freePort()), DATABASE_URL: databaseUrl, ...env, INLAID_QUEUE_PREFIX: queuePrefix });
  const gateway = await startGateway(config, ['warn', 'error']);
  const db = gateway.app.get(DataSource);
  return {
    gateway,
    databaseUrl,
    db,
    close: async () => {
      await gateway.close();
      await dropDatabase(`postgres://postgres@127.0.0.1:5432/${name}`);
    },
  };
}

export async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One worker as the gateway's /readyz reports it. */
export interface WorkerSnap {
  addr: string;
  ready: boolean;
  inFlight: number;
}

/** Every worker in the gateway's /readyz body. */
export async function readyWorkers(h: Harness): Promise<WorkerSnap[]> {
  return ((await (await fetch(`${h.gateway.httpUrl}/readyz`)).json()) as { workers: WorkerSnap[] }).workers;
}

/** The /readyz entry of the worker at `addr`. */
export async function workerSnap(h: Harness, addr: string): Promise<WorkerSnap> {
  return (await readyWorkers(h)).find((w) => w.addr === addr) as WorkerSnap;
}

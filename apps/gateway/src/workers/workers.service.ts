/** Owns one WorkerConnection per configured worker address and routes requests among them. */
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { clientLeft } from '../common/client-left';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { LinkListener, WorkerConnection, WorkerSnapshot } from './worker-connection';
import { routeRequest } from './worker-routing';
import { DEFAULT_BACKOFF } from './backoff';
import { workerChannelCredentials } from '../tls/tls-credentials';
import { toolSupportOf, type ToolSupport } from '../openai/tool-format';

export type WorkerInfoListener = (addr: string, info: worker.WorkerInfo) => void;

/**
 * How long a request (pick) for a model that no caught-up worker lists waits for a worker still catching up on it (an
 * adapter the gateway loads onto a worker whose Session came up: AdapterCatchUp) before it is answered 503.
 */
export const CATCH_UP_WAIT_MS = 30_000;

@Injectable()
export class WorkersService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Workers');
  private readonly conns: WorkerConnection[];
  private readonly listeners: WorkerInfoListener[] = [];
  /** Requests waiting for a worker's catch-up (pick): woken by every link event. */
  private readonly waiters = new Set<() => void>();
  /** pick's bound on that wait (specs shorten it). */
  catchUpWaitMs = CATCH_UP_WAIT_MS;

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    const creds = workerChannelCredentials(config.workerTls);
    this.conns = config.workerAddrs.map(
      (addr) => new WorkerConnection(addr, this.logger, (info) => this.listeners.forEach((l) => l(addr, info)), DEFAULT_BACKOFF, creds),
    );
    this.conns.forEach((c) => c.watch(() => this.wakeWaiters()));
  }

  onWorkerInfo(listener: WorkerInfoListener): void {
    this.listeners.push(listener);
  }

  /** Session up/down and WorkerState events of every worker (the scheduler's input). */
  onLink(listener: LinkListener): void {
    this.conns.forEach((c) => c.watch(listener));
  }

  onModuleInit(): void {
    this.conns.forEach((c) => c.start());
  }

  onModuleDestroy(): void {
    this.conns.forEach((c) => c.stop());
    this.wakeWaiters();
  }

  /** /readyz: a worker takes new work (a gateway whose only workers are stopping is not ready). */
  get anyReady(): boolean {
    return this.conns.some((c) => c.accepting);
  }

  /** Every configured worker's connection, up or not. */
  connections(): readonly WorkerConnection[] {
    return this.conns;
  }

  /** Every connected worker (admin calls go to all of them). */
  readyConnections(): WorkerConnection[] {
    return this.conns.filter((c) => c.ready);
  }

  snapshots(): WorkerSnapshot[] {
    return this.conns.map((c) => c.snapshot());
  }

  /** The workers new work (and admin calls) may go to: ready and not stopping (WorkerConnection.accepting). */
  acceptingConnections(): WorkerConnection[] {
    return this.conns.filter((c) => c.accepting);
  }

  /**
   * The worker for a request's Prepare, Tokenize or Detokenize (an accepting one: a stopping worker gets no new work),
   * skipping `exclude` (workers already tried for it): one that lists the model and is not catching up on it
   * (routeRequest). When none does but a worker is still catching up on it (its Session came up and AdapterCatchUp may
   * load the task there: WorkerConnection.pendingFor), the request waits for that, up to catchUpWaitMs, then gets 503;
   * `signal` (the client going away) ends the wait. Before, it went to that worker at once and got a 404 for a task the
   * fleet serves.
   */
  async pick(model: string, exclude: ReadonlySet<string> = new Set(), signal?: AbortSignal): Promise<WorkerConnection> {
    const deadline = Date.now() + this.catchUpWaitMs;
    for (;;) {
      if (signal?.aborted) throw clientLeft('while its model was loaded onto a worker');
      const conn = routeRequest(this.acceptingConnections().filter((c) => !exclude.has(c.addr)), model);
      if (conn !== null) return conn;
      const left = deadline - Date.now();
      if (left <= 0) throw InlaidError.unavailable('The model is still being loaded onto the workers; retry shortly.');
      await this.nextLinkEvent(left, signal);
    }
  }

  private nextLinkEvent(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private wakeWaiters(): void {
    for (const wake of [...this.waiters]) wake();
  }

  /**
   * The tool support of the workers serving `model` (the first accepting one's report: they serve one base model);
   * the Hermes fallback when none accepts work (the request then gets 503 anyway).
   */
  toolSupport(model: string): ToolSupport {
    return toolSupportOf(this.acceptingConnections().find((c) => c.serves(model))?.toolInfo());
  }

  /**
   * The length of `model` as an accepting worker serving it reports it (its ModelCard), undefined when none does: what
   * bounds a request that leaves max_tokens out (the held-logprobs caps, REST and gRPC).
   */
  maxModelLen(model: string): number | undefined {
    return this.acceptingConnections().find((c) => c.serves(model))?.models().find((m) => m.id === model)?.maxModelLen || undefined;
  }

  /** Whether an accepting worker outside `exclude` exists (a failed request can be retried there). */
  hasReadyOutside(exclude: ReadonlySet<string>): boolean {
    return this.acceptingConnections().some((c) => !exclude.has(c.addr));
  }

  /**
   * Every model served by an accepting worker (as pick and the scheduler see them: a stopping worker's are not listed),
   * base models first, deduplicated by id.
   */
  listModels(): common.ModelCard[] {
    const accepting = this.acceptingConnections();
    if (accepting.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    const byId = new Map<string, common.ModelCard>();
    for (const c of accepting) for (const m of c.models()) if (!byId.has(m.id)) byId.set(m.id, m);
    return [...byId.values()].sort((a, b) => Number(a.parent !== '') - Number(b.parent !== '') || a.id.localeCompare(b.id));
  }
}

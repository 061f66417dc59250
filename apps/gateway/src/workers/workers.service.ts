/** Owns one WorkerConnection per configured worker address and routes requests among them. */
import { status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { clientLeft } from '../common/client-left';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { LinkEvent, LinkListener, WorkerConnection, WorkerSnapshot } from './worker-connection';
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
  /** Requests waiting for a worker's catch-up (pick): each routes again on a link event that may change its answer (linkEvent). */
  private readonly waiters = new Set<() => boolean>();
  /** Whether each worker accepted work at its last link event (a WorkerState wakes the waiters only when this flips). */
  private readonly accepting = new Map<WorkerConnection, boolean>();
  /** pick's bound on that wait (specs shorten it). */
  catchUpWaitMs = CATCH_UP_WAIT_MS;

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    const creds = workerChannelCredentials(config.workerTls);
    this.conns = config.workerAddrs.map(
      (addr) => new WorkerConnection(addr, this.logger, (info) => this.listeners.forEach((l) => l(addr, info)), DEFAULT_BACKOFF, creds),
    );
    this.conns.forEach((c) => c.watch((conn, event) => this.linkEvent(conn, event)));
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
   * not when each such worker only unloads it (unloadingFor: no served task is behind the name), a 404 at once;
   * `signal` (the client going away) ends the wait, and `deadline` (the client's own, ms since the epoch) bounds it
   * (then DEADLINE_EXCEEDED). Before, it went to that worker at once and got a 404 for a task the fleet serves. The wait
   * is one timer and one abort listener; it routes again only on the link events that can change the answer (wakeWaiters).
   */
  pick(model: string, exclude: ReadonlySet<string> = new Set(), signal?: AbortSignal, deadline?: number): Promise<WorkerConnection> {
    const route = (): WorkerConnection | null => routeRequest(this.acceptingConnections().filter((c) => !exclude.has(c.addr)), model);
    try {
      if (signal?.aborted) throw clientLeft('while its model was loaded onto a worker');
      const now = route();
      if (now !== null) return Promise.resolve(now);
    } catch (err) {
      return Promise.reject(err);
    }
    const own = Date.now() + this.catchUpWaitMs;
    const clientFirst = deadline !== undefined && deadline < own;
    return new Promise<WorkerConnection>((resolve, reject) => {
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      // routes again; true once settled (a worker, or routeRequest's UNAVAILABLE: no accepting worker left)
      const check = (): boolean => {
        try {
          const conn = route();
          if (conn === null) return false;
          finish(() => resolve(conn));
        } catch (err) {
          finish(() => reject(err));
        }
        return true;
      };
      const onAbort = (): void => finish(() => reject(clientLeft('while its model was loaded onto a worker')));
      const timer = setTimeout(() => {
        if (check()) return;
        finish(() => reject(clientFirst
          ? new InlaidError(status.DEADLINE_EXCEEDED, 'The model was still being loaded onto the workers when the request\'s deadline passed.')
          : InlaidError.unavailable('The model is still being loaded onto the workers; retry shortly.')));
      }, Math.max(0, Math.min(own, deadline ?? own) - Date.now()));
      timer.unref();
      this.waiters.add(check);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * A link event that may change what pick answers: a Session up or down, a model list or adapter hold changed
   * ('info'), and a WorkerState only when the worker stops or starts accepting work. The states a busy worker sends
   * every step change nothing of it and wake nobody. With no waiter a state is skipped, its copy left stale: a state
   * only turns accepting off (a draining flag, one-way), and it turns on again only at 'up' (never skipped), so a stale
   * copy can only say accepting where the worker is not, which costs at most one extra re-route, never a missed one.
   */
  private linkEvent(conn: WorkerConnection, event: LinkEvent): void {
    if (event === 'state' && this.waiters.size === 0) return;
    const accepting = conn.accepting;
    const flipped = this.accepting.get(conn) !== accepting;
    this.accepting.set(conn, accepting);
    if (event !== 'state' || flipped) this.wakeWaiters();
  }

  private wakeWaiters(): void {
    for (const check of [...this.waiters]) check();
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
   * base models first, deduplicated by id. Not the adapters a worker's catch-up holds by name (a stale one it still
   * lists, e.g. of a task deleted while its link was down, or one it is about to replace or unload): such a model is
   * listed only when another worker lists it without holding it. The hold of every adapter a Session starts with
   * (before the catch-up's first database read, at most 2 s) hides nothing: that read tells which are stale.
   */
  listModels(): common.ModelCard[] {
    const accepting = this.acceptingConnections();
    if (accepting.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    const byId = new Map<string, common.ModelCard>();
    const heldByName = (c: WorkerConnection, id: string): boolean => {
      const hold = c.adapterHold;
      return hold !== null && hold !== 'all' && hold.has(id);
    };
    for (const c of accepting) for (const m of c.models()) if (!byId.has(m.id) && !heldByName(c, m.id)) byId.set(m.id, m);
    return [...byId.values()].sort((a, b) => Number(a.parent !== '') - Number(b.parent !== '') || a.id.localeCompare(b.id));
  }
}

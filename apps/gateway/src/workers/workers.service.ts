/** Owns one WorkerConnection per configured worker address and routes requests among them. */
import { Inject, Injectable, Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import type { GatewayConfig } from '@inlaid/config';
import { common, worker } from '@inlaid/proto';
import { InlaidError } from '../common/inlaid-error';
import { GATEWAY_CONFIG } from '../config/config.module';
import { LinkListener, WorkerConnection, WorkerSnapshot } from './worker-connection';
import { pickWorker } from './worker-routing';
import { DEFAULT_BACKOFF } from './backoff';
import { workerChannelCredentials } from '../tls/tls-credentials';
import { toolSupportOf, type ToolSupport } from '../openai/tool-format';

export type WorkerInfoListener = (addr: string, info: worker.WorkerInfo) => void;

@Injectable()
export class WorkersService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('Workers');
  private readonly connections: WorkerConnection[];
  private readonly listeners: WorkerInfoListener[] = [];

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    const creds = workerChannelCredentials(config.workerTls);
    this.connections = config.workerAddrs.map(
      (addr) => new WorkerConnection(addr, this.logger, (info) => this.listeners.forEach((l) => l(addr, info)), DEFAULT_BACKOFF, creds),
    );
  }

  onWorkerInfo(listener: WorkerInfoListener): void {
    this.listeners.push(listener);
  }

  /** Session up/down and WorkerState events of every worker (the scheduler's input). */
  onLink(listener: LinkListener): void {
    this.connections.forEach((c) => c.watch(listener));
  }

  onModuleInit(): void {
    this.connections.forEach((c) => c.start());
  }

  onModuleDestroy(): void {
    this.connections.forEach((c) => c.stop());
  }

  /** /readyz: a worker takes new work (a gateway whose only workers are stopping is not ready). */
  get anyReady(): boolean {
    return this.connections.some((c) => c.accepting);
  }

  /** Every connected worker (admin calls go to all of them). */
  readyConnections(): WorkerConnection[] {
    return this.connections.filter((c) => c.ready);
  }

  snapshots(): WorkerSnapshot[] {
    return this.connections.map((c) => c.snapshot());
  }

  /** The workers new work (and admin calls) may go to: ready and not stopping (WorkerConnection.accepting). */
  acceptingConnections(): WorkerConnection[] {
    return this.connections.filter((c) => c.accepting);
  }

  /** The worker for a request (an accepting one: a stopping worker gets no new Prepare), skipping `exclude` (workers already tried for it). */
  pick(model: string, exclude: ReadonlySet<string> = new Set()): WorkerConnection {
    return pickWorker(this.acceptingConnections().filter((c) => !exclude.has(c.addr)), model);
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

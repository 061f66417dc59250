/**
 * One gRPC link to one worker: GetInfo, then one long-lived Session stream over which requests are admitted
 * and aborted and token deltas come back, demultiplexed into per-request queues. When the stream breaks (or the
 * worker stops answering keepalive pings), every in-flight request fails with UNAVAILABLE and the link reconnects
 * with backoff. A RequestError event fails its request as workerRequestError classifies it by the kind the worker
 * names (400 bad input, 404 unknown model, 503 shutdown or backlog, else a logged 500), never by its text.
 */
import { ChannelCredentials, ChannelOptions, ClientDuplexStream, credentials, Metadata } from '@grpc/grpc-js';
import { common, worker } from '@inlaid/proto';
import { InlaidError, WORKER_UNAVAILABLE_MESSAGE, workerRequestError } from '../common/inlaid-error';
import { asDigest } from './adapter-digest';
import { AsyncQueue } from './async-queue';
import { backoffDelay, BackoffOptions, DEFAULT_BACKOFF } from './backoff';

export interface WorkerLogger {
  log(message: string): void;
  warn(message: string): void;
}

export interface WorkerSnapshot {
  readonly addr: string;
  readonly ready: boolean;
  readonly inFlight: number;
  readonly workerId: string | null;
  readonly baseModel: string | null;
  readonly state: worker.WorkerState | null;
  readonly lastError: string | null;
}

export const CHANNEL_OPTIONS: ChannelOptions = {
  // grpc-js defaults back off to 120 s; a restarted worker must be picked up within a couple of seconds.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // A frozen worker (SIGSTOP, a partition without RST) never closes its socket: without pings its Session, and every
  // stream on it, would wait forever (a per-request inactivity timeout cannot tell it from a long prefill). A ping
  // every 10 s unanswered for 5 s drops the link: its requests fail UNAVAILABLE and it reconnects. The worker's
  // server accepts pings this often (workers/inlaid_worker/server/app.py GRPC_SERVER_OPTIONS), idle or not.
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
};
const INFO_TIMEOUT_MS = 2000;

type Session = ClientDuplexStream<worker.ControlMessage, worker.WorkerEvent>;

/**
 * 'up': a Session opened; 'state': a WorkerState arrived; 'info': its model list (refreshInfo) or its adapter hold
 * (holdAdapters) changed; 'down': the Session ended (just before its requests fail).
 */
export type LinkEvent = 'up' | 'state' | 'info' | 'down';

/**
 * Adapters a worker's Session may not be routed to yet (AdapterCatchUp is loading, replacing or unloading them there):
 * 'all' for every model but the base (its catch-up has not read the database yet), or those names; null for none.
 */
export type AdapterHold = 'all' | ReadonlySet<string> | null;
export type LinkListener = (conn: WorkerConnection, event: LinkEvent) => void;

export class WorkerConnection {
  private readonly client: worker.WorkerClient;
  private readonly pending = new Map<string, AsyncQueue<worker.TokenDelta>>();
  private session: Session | null = null;
  private info: worker.WorkerInfo | null = null;
  private state: worker.WorkerState | null = null;
  /** A state of this Session said `draining` (GetInfo's at its start, one on the stream, or refreshInfo's): one-way until the next Session. */
  private stopping = false;
  private lastError: string | null = null;
  private stopped = false;
  /** This Session's adapter hold (pendingFor); reset at each Session's start (holdOnSessionStart) and end. */
  private held: AdapterHold = null;
  /** The names of the hold that its catch-up only unloads (unloadingFor): a subset of `held`, empty with it. */
  private unloading: ReadonlySet<string> = new Set();
  /**
   * Whether a new Session starts holding every adapter ('all', before its 'up' listeners run): set by AdapterCatchUp,
   * which narrows the hold once it knows what the worker lacks, so no request meets a worker whose adapters are not
   * caught up yet (one it lacks: a 404; one listed from an older job: the old adapter).
   */
  holdOnSessionStart = false;
  private wake: (() => void) | null = null;
  private readonly linkListeners: LinkListener[] = [];

  constructor(
    readonly addr: string,
    private readonly logger: WorkerLogger,
    private readonly onInfo: (info: worker.WorkerInfo) => void = () => undefined,
    private readonly backoff: BackoffOptions = DEFAULT_BACKOFF,
    channelCredentials: ChannelCredentials = credentials.createInsecure(),
    channelOptions: ChannelOptions = CHANNEL_OPTIONS,
  ) {
    this.client = new worker.WorkerClient(addr, channelCredentials, channelOptions);
  }

  get ready(): boolean {
    return this.session !== null && this.info !== null;
  }

  /**
   * Ready and not stopping: no WorkerState of this Session said `draining` (sent as soon as the worker refuses new
   * Admits, RunningWorker.stop). Once one did, the worker stays stopping until its Session ends (a stop is one-way, as
   * the Dispatcher keeps it drained; a later state without the flag, e.g. one published before it, does not undo it);
   * a new Session starts from GetInfo's state. New work (Prepare, Tokenize, model lists, admin calls) goes only to an
   * accepting worker; a stopping one stays ready for the requests it runs until its link goes down.
   */
  get accepting(): boolean {
    return this.ready && !this.stopping;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  models(): readonly common.ModelCard[] {
    return this.ready ? (this.info?.models ?? []) : [];
  }

  /** What GetInfo said of the model's tool calling (openai/tool-format.ts); null before it answered. */
  toolInfo(): Pick<worker.WorkerInfo, 'toolCallParser' | 'nativeTools'> | null {
    return this.info === null ? null : { toolCallParser: this.info.toolCallParser, nativeTools: this.info.nativeTools };
  }

  serves(model: string): boolean {
    return this.models().some((m) => m.id === model);
  }

  /**
   * Whether requests for `model` must not be routed here yet: the adapter catch-up of this Session may still load,
   * replace or unload it (holdAdapters). Never for the base model.
   */
  pendingFor(model: string): boolean {
    const held = this.held;
    if (held === null || !this.ready) return false;
    if (held !== 'all') return held.has(model);
    return model !== '' && model !== this.info?.baseModel && !this.models().some((m) => m.id === model && m.parent === '');
  }

  /**
   * Whether the adapter catch-up holds `model` here only to unload it (pendingFor, and no served task is behind the
   * name: deleted or unloaded, or a newer job not loaded yet, while requests in flight here drain): a request for it is
   * answered 404 at once rather than waiting for the drain (routeRequest). Never within an 'all' hold.
   */
  unloadingFor(model: string): boolean {
    return this.unloading.has(model) && this.pendingFor(model); // (empty under an 'all' or no hold: the Set first)
  }

  /** The adapters this Session may not be routed to yet (see pendingFor). */
  get adapterHold(): AdapterHold {
    return this.held;
  }

  /** The names of adapterHold that its catch-up only unloads (see unloadingFor). */
  get unloadingHold(): ReadonlySet<string> {
    return this.unloading;
  }

  /**
   * Sets this Session's adapter hold (AdapterCatchUp) and tells the listeners ('info'); a no-op while no Session is up.
   * `unloading`: the names of the hold only to be unloaded (unloadingFor; names outside a set hold are ignored).
   */
  holdAdapters(hold: AdapterHold, unloading: Iterable<string> = []): void {
    if (this.session === null) return;
    const held = hold !== null && hold !== 'all' && hold.size === 0 ? null : hold;
    this.held = held;
    this.unloading = held === null || held === 'all' ? new Set() : new Set([...unloading].filter((m) => held.has(m)));
    this.emit('info');
  }

  /** Ends the hold on `model` (its catch-up is done); from 'all' it changes nothing (the hold is narrowed first). */
  releaseAdapter(model: string): void {
    const held = this.held;
    if (held === null || held === 'all' || !held.has(model)) return;
    this.holdAdapters(new Set([...held].filter((m) => m !== model)), this.unloading);
  }

  /** The path LoadAdapter loaded `name` from, as the worker reports it (WorkerInfo.adapter_paths); undefined when not listed there. */
  adapterPath(name: string): string | undefined {
    return this.reported(this.info?.adapterPaths, name);
  }

  /**
   * The content digest of what LoadAdapter loaded as `name`, as the worker reports it (WorkerInfo.adapter_digests);
   * undefined when not listed there (an older worker, an adapter of its own) or not a digest (adapter-digest.ts).
   */
  adapterDigest(name: string): string | undefined {
    return asDigest(this.reported(this.info?.adapterDigests, name));
  }

  private reported(map: { [name: string]: string } | undefined, name: string): string | undefined {
    if (!this.ready || map === undefined) return undefined;
    return Object.prototype.hasOwnProperty.call(map, name) ? map[name] : undefined;
  }

  snapshot(): WorkerSnapshot {
    return {
      addr: this.addr,
      ready: this.ready,
      inFlight: this.inFlight,
      workerId: this.info?.workerId ?? null,
      baseModel: this.info?.baseModel ?? null,
      state: this.state,
      lastError: this.lastError,
    };
  }

  /** Calls `listener` on Session up/down and on every WorkerState (the scheduler reacts to each). */
  watch(listener: LinkListener): void {
    this.linkListeners.push(listener);
  }

  /** The latest WorkerState (null before the first GetInfo). */
  get latestState(): worker.WorkerState | null {
    return this.state;
  }

  start(): void {
    void this.loop();
  }

  /** The worker's gRPC client, for admin calls outside the Session (adapters, re-quantization). */
  get rpc(): worker.WorkerClient {
    return this.client;
  }

  /** Re-reads GetInfo after an admin call (adapter loaded/unloaded) so routing sees the new model list. */
  async refreshInfo(): Promise<void> {
    const info = await this.getInfo();
    if (this.session === null) return;
    this.info = info;
    this.state = info.state ?? this.state;
    this.stopping ||= info.state?.draining === true;
    this.onInfo(info);
    this.emit('info'); // placement sees the new model list at once (before: only at the next WorkerState)
  }

  stop(): void {
    this.stopped = true;
    this.session?.cancel();
    this.wake?.();
    this.client.close();
  }

  getInfo(timeoutMs = INFO_TIMEOUT_MS): Promise<worker.WorkerInfo> {
    return new Promise((resolve, reject) => {
      this.client.getInfo({}, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, info) =>
        err ? reject(err) : resolve(info),
      );
    });
  }

  /** Prepare on this worker; `signal` (the client going away) cancels the call (it then fails with CANCELLED). */
  prepare(req: worker.PrepareRequest, timeoutMs: number, signal?: AbortSignal): Promise<worker.PrepareResponse> {
    return new Promise((resolve, reject) => {
      const cancel = (): void => call.cancel();
      const call = this.client.prepare(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        signal?.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(res);
      });
      if (signal?.aborted) cancel();
      else signal?.addEventListener('abort', cancel, { once: true });
    });
  }

  /** Admits a prepared request; the returned queue yields its deltas and ends after the final one. */
  admit(admit: worker.Admit): AsyncQueue<worker.TokenDelta> {
    const session = this.session;
    if (session === null) throw InlaidError.unavailable(WORKER_UNAVAILABLE_MESSAGE); // (its address is no client's business)
    // run ids are unique (resume.ts runRequestId: per dispatcher run, per gateway process): never true (a plain Error is
    // a bug, logged as such, a 500)
    if (this.pending.has(admit.requestId)) throw new Error(`worker link invariant broken: run ${admit.requestId} is already in flight`);
    const queue = new AsyncQueue<worker.TokenDelta>();
    this.pending.set(admit.requestId, queue);
    session.write({ kind: { $case: 'admit', value: admit } });
    return queue;
  }

  /** Tells the worker to drop the request and free its KV blocks; its queue ends at once. */
  abort(requestId: string): void {
    const queue = this.pending.get(requestId);
    if (queue === undefined) return;
    this.pending.delete(requestId);
    queue.end();
    this.session?.write({ kind: { $case: 'abort', value: { requestId } } });
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      try {
        this.info = await this.getInfo();
        this.state = this.info.state ?? null;
        this.stopping = this.state?.draining === true; // a new Session (a restarted worker): as it says now
        this.onInfo(this.info);
        attempt = 0;
        this.logger.log(`worker ${this.addr} (${this.info.workerId}) connected, base ${this.info.baseModel}`);
        await this.runSession();
      } catch (err) {
        this.lastError = err instanceof Error ? err.message : String(err);
      }
      const wasUp = this.info !== null;
      this.info = null;
      if (wasUp) this.emit('down');
      this.failAll(InlaidError.unavailable(WORKER_UNAVAILABLE_MESSAGE));
      if (this.stopped) break;
      await this.sleep(backoffDelay(attempt++, this.backoff));
    }
  }

  private runSession(): Promise<void> {
    return new Promise((resolve) => {
      const session = this.client.session();
      this.session = session;
      this.held = this.holdOnSessionStart ? 'all' : null;
      this.unloading = new Set();
      this.emit('up');
      const finish = (why: string) => {
        if (this.session !== session) return;
        this.session = null;
        this.held = null;
        this.unloading = new Set();
        this.lastError = why;
        if (!this.stopped) this.logger.warn(`worker ${this.addr} session ended: ${why}`);
        resolve();
      };
      session.on('data', (event: worker.WorkerEvent) => this.onEvent(event));
      session.on('error', (err: Error) => finish(err.message));
      session.on('end', () => finish('stream ended by the worker'));
      session.on('close', () => finish('stream closed'));
    });
  }

  private onEvent(event: worker.WorkerEvent): void {
    const kind = event.kind;
    if (kind === undefined) return;
    if (kind.$case === 'state') {
      this.state = kind.value;
      this.stopping ||= kind.value.draining;
      this.emit('state');
    } else if (kind.$case === 'delta') {
      const queue = this.pending.get(kind.value.requestId);
      if (queue === undefined) return;
      queue.push(kind.value);
      if (kind.value.finishReason !== common.FinishReason.FINISH_REASON_UNSPECIFIED) {
        this.pending.delete(kind.value.requestId);
        queue.end();
      }
    } else {
      // a RequestError: the worker refused or failed this one request, for bad input it could only see at Admit, its
      // shutdown or backlog, an adapter unloaded since Prepare, or a failure of its own; its kind says which
      const queue = this.pending.get(kind.value.requestId);
      this.pending.delete(kind.value.requestId);
      queue?.fail(workerRequestError(kind.value));
    }
  }

  private emit(event: LinkEvent): void {
    for (const listener of this.linkListeners) {
      try {
        listener(this, event);
      } catch (err) {
        this.logger.warn(`worker ${this.addr} ${event} listener failed: ${(err as Error).message}`);
      }
    }
  }

  private failAll(err: InlaidError): void {
    for (const queue of this.pending.values()) queue.fail(err);
    this.pending.clear();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

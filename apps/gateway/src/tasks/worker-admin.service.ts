/**
 * Admin calls to the workers for onboarding: validate an adapter, load/unload it on every worker, and run
 * an incremental re-quantization, once per checkpoint store (shared-requantize.ts). Loads and unloads are
 * idempotent (ALREADY_EXISTS / NOT_FOUND count as done); errors as toAdminError says (transport failures a 503 / 504 with a
 * fixed message, never grpc-js's text). A load answers the content digest of what each worker loaded, a validation the
 * digest of the files it read (job-digest.ts); a load everywhere replaces an older job's adapter that a worker still
 * holds under the name (heldOther). A worker never unloads an adapter with requests in flight (UnloadAdapter answers
 * FAILED_PRECONDITION marked in use: REFUSAL_KEY, AdapterInUse): such a refusal inside a load everywhere is ABORTED (UnloadFailed: the onboarding step is
 * retried), and the callers ask the adapter catch-up to hold the name on those workers (AdapterCatchUp.recheck) so the
 * requests drain and its unload is retried there.
 */
import { Metadata, ServiceError, status } from '@grpc/grpc-js';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { common, worker } from '@inlaid/proto';
import { fromWorkerError, InlaidError, workerBug, workerLinkError } from '../common/inlaid-error';
import { asDigest } from '../workers/adapter-digest';
import { WorkerConnection } from '../workers/worker-connection';
import { WorkersService } from '../workers/workers.service';
import { heldOther, jobDigest, servedDigest, type Held, type Loaded } from './job-digest';
import { ProgressSink, QuantTaskSpec, SharedRequantize } from './shared-requantize';

export type { ProgressSink, QuantTaskSpec, WorkerRole } from './shared-requantize';

const ADMIN_TIMEOUT_MS = 60_000;

/**
 * The admin calls' own refusals, whose texts the worker writes for the admin (an adapter name taken or unknown, no
 * checkpoint to re-quantize, a re-quantization under way, every adapter slot in use): passed on with their codes.
 */
const ADMIN_REFUSALS: ReadonlySet<number> = new Set([
  status.ALREADY_EXISTS,
  status.NOT_FOUND,
  status.FAILED_PRECONDITION,
  status.ABORTED,
  status.RESOURCE_EXHAUSTED,
]);

/**
 * An admin call's failure as the client sees it: INVALID_ARGUMENT 400 naming `param` and the refusals in
 * ADMIN_REFUSALS with the worker's text; a failed transport (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED) a 503 / 504
 * with a fixed message (workerLinkError: grpc-js's text, which names the worker's address, is logged); any other code
 * (UNKNOWN from a handler that raised, INTERNAL) and anything that is not a gRPC error a logged 500.
 */
export function toAdminError(err: unknown, param?: string): InlaidError {
  if (err instanceof InlaidError) return err;
  const e = err as Partial<ServiceError>;
  if (typeof e?.code !== 'number') return fromWorkerError(err, ''); // a bug: logged there, a generic 500
  const message = e.details ?? e.message ?? '';
  const link = workerLinkError(e.code, message);
  if (link !== undefined) return link;
  if (e.code === status.INVALID_ARGUMENT) return InlaidError.invalid(message, param);
  if (ADMIN_REFUSALS.has(e.code)) return new InlaidError(e.code, message);
  return workerBug(`admin call (${status[e.code] ?? e.code}): ${message}`);
}

/**
 * The trailing-metadata key and value with which a worker marks UnloadAdapter's refusal of an adapter that has requests
 * in flight (server/servicer.py REFUSAL_IN_USE): its FAILED_PRECONDITION is told apart by this marker, not by the code
 * alone (before, any FAILED_PRECONDITION counted as in use).
 */
const REFUSAL_KEY = 'inlaid-refusal';
const ADAPTER_IN_USE = 'adapter-in-use';

/** UnloadAdapter's refusal of an adapter with requests in flight (the worker's marker: REFUSAL_KEY). */
export class AdapterInUse extends InlaidError {
  constructor(message: string) {
    super(status.FAILED_PRECONDITION, message);
    this.name = 'AdapterInUse';
  }
}

/** Whether an unload's failure is the worker's refusal to unload an adapter with requests in flight (AdapterInUse). */
export function refusedInUse(err: unknown): boolean {
  return err instanceof AdapterInUse;
}

/** Whether a gRPC error carries the worker's in-use marker (REFUSAL_KEY: ADAPTER_IN_USE in its trailing metadata). */
function markedInUse(err: unknown): boolean {
  const e = err as Partial<ServiceError>;
  if (e?.code !== status.FAILED_PRECONDITION || typeof e.metadata?.get !== 'function') return false;
  return e.metadata.get(REFUSAL_KEY).some((v) => String(v) === ADAPTER_IN_USE);
}

/**
 * An unload (or a load's replace of an older adapter) that some workers did not do; `inUse`: those that refused
 * because the adapter they hold under the name has requests in flight (refusedInUse), perhaps none. Its caller asks
 * the adapter catch-up to look at those workers again (AdapterCatchUp.recheck): it holds the name there (no new
 * request goes there, so those in flight drain) and retries the unload.
 */
export class UnloadFailed extends InlaidError {
  /** `onlyInUse`: every failure was a refusal in use (an unload everywhere's; nothing else went wrong). */
  constructor(code: status, message: string, readonly inUse: readonly string[], details: InlaidError['details'] = {}, readonly onlyInUse = false) {
    super(code, message, details);
    this.name = 'UnloadFailed';
  }
}

function unary<Req, Res>(
  fn: (req: Req, md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => unknown,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, new Metadata(), { deadline: Date.now() + ADMIN_TIMEOUT_MS }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

@Injectable()
export class WorkerAdminService {
  private readonly logger = new Logger('WorkerAdmin');

  constructor(@Inject(WorkersService) private readonly workers: WorkersService) {}

  /**
   * The workers admin calls go to: the accepting ones. A stopping worker (WorkerConnection.accepting) refuses new calls
   * in its shutdown grace, and its adapter set no longer matters: it goes away. (A worker that starts in its place
   * serves its --adapters-dir and the published checkpoint, which holds no adapter; AdapterCatchUp loads the tasks'
   * adapters onto it when its Session comes up.) Before, validate could pick it (POST /v1/tasks a 503 during a
   * rolling restart) and load / unload / requantize failed on it.
   */
  private ready(): WorkerConnection[] {
    const ready = this.workers.acceptingConnections();
    if (ready.length === 0) throw InlaidError.unavailable('No inference worker is ready; retry shortly.');
    return ready;
  }

  /**
   * Validates on one accepting worker (all serve the same base); 400 with the worker's reason. The card's `digest` is
   * that of the files the worker read (empty from an older worker): the job's reference digest (job-digest.ts).
   */
  async validate(name: string, path: string, param = 'adapter'): Promise<common.ModelCard> {
    const c = this.ready()[0] as WorkerConnection;
    return unary(c.rpc.validateAdapter.bind(c.rpc), { name, path }).catch((err: unknown) => {
      throw toAdminError(err, param);
    });
  }

  /**
   * Loads the adapter on every accepting worker; answers the digest for the job's row: what they serve once the
   * replaces below are done (servedDigest: the one digest every worker reports, else the reference, jobDigest: the
   * fresh loads' when they agree, else `validated`, the digest the job's validation recorded; null when unknown).
   * Called under the task's lock. A worker that answers ALREADY_EXISTS holding another adapter under the name
   * (heldOther: from another path, or from `path` with another digest than that reference; its link was down while the
   * task was deleted and its files rewritten in place, and it came back before the job had a digest for its catch-up to
   * compare) is unloaded and loaded again: before, the load counted as done there and that worker served the old
   * weights (for good when it was the only one: its old digest was recorded). A worker that refuses that unload (the
   * old adapter has requests in flight) is left as it is and the call fails with ABORTED once every other worker is
   * done (UnloadFailed, `inUse`): the step is retried, and the caller asks the catch-up to hold the name there until
   * the requests drain (AdapterCatchUp.recheck). A fresh load that read other bytes than the digest recorded (the files
   * changed since the validation, or during the step) is logged. `undoFreshLoads`: when it fails (a later worker's load
   * failed, or a replace was refused in use), it first unloads, best effort, what it loaded fresh (TasksService.loadLora:
   * with no job row to show for them, its retry would find the name served and answer 409 task_exists).
   */
  async loadEverywhere(name: string, path: string, opts: { validated?: string | null; param?: string; undoFreshLoads?: boolean } = {}): Promise<string | null> {
    const param = opts.param ?? 'adapter';
    const conns = this.ready();
    const loaded: Loaded[] = [];
    try {
      for (const c of conns) loaded.push(await this.loadOn(c, name, path, param));
      return await this.replaceOthers(conns, loaded, name, path, opts.validated ?? null, param);
    } catch (err) {
      if (opts.undoFreshLoads === true) {
        for (const [i, c] of conns.entries()) {
          if (loaded[i]?.fresh !== true) continue;
          await this.unloadOn(c, name).catch((e: unknown) => this.logger.warn(`could not unload ${name} from worker ${c.addr} after a failed load: ${(e as Error).message}`));
        }
      }
      throw err;
    }
  }

  /** loadEverywhere's replaces of an older adapter (`loaded`: each of `conns`' load), then the digest it answers. */
  private async replaceOthers(conns: WorkerConnection[], loaded: Loaded[], name: string, path: string, validated: string | null, param: string): Promise<string | null> {
    const reference = jobDigest(loaded, validated);
    const inUse: string[] = [];
    for (const [i, c] of conns.entries()) {
      const l = loaded[i] as Loaded;
      if (l.fresh || !heldOther({ path: c.adapterPath(name), digest: l.digest }, path, reference)) continue;
      const held = `${c.adapterPath(name) ?? ''}${l.digest === undefined ? '' : ` (digest ${l.digest})`}`;
      this.logger.warn(`worker ${c.addr} already held ${name} from ${held}, not ${path}${reference === null ? '' : ` with digest ${reference}`}: an older job's adapter, replaced`);
      try {
        await this.unloadOn(c, name);
      } catch (err) {
        if (!refusedInUse(err)) throw err;
        inUse.push(c.addr);
        this.logger.warn(`could not replace ${name} on worker ${c.addr}: ${(err as Error).message}`);
        continue;
      }
      loaded[i] = await this.loadOn(c, name, path, param);
    }
    if (inUse.length > 0) {
      throw new UnloadFailed(status.ABORTED, `The adapter \`${name}\` could not be replaced on ${inUse.length} of ${conns.length} workers: an older adapter under that name has requests in flight there; retry once they finish.`, inUse, { param });
    }
    const recorded = servedDigest(loaded, reference);
    const other = conns.filter((_c, i) => loaded[i]?.fresh === true && recorded !== null && loaded[i]?.digest !== undefined && loaded[i]?.digest !== recorded);
    if (other.length > 0) {
      this.logger.warn(`${other.map((c) => c.addr).join(', ')} loaded ${name} from ${path} with another digest than ${recorded ?? ''} (the files changed since the validation or during the load); recorded: ${recorded ?? ''}`);
    }
    return recorded;
  }

  /**
   * An onboarding's validate step, under the task's lock, with the validated `digest`: unloads from every accepting
   * worker an adapter it holds under `name` that is not the one at `path` with that digest (heldOther): an older job's
   * (the worker's link was down while the task was deleted, and it came back before this job had a digest for its
   * catch-up to compare), so that it does not serve the old weights under the name until the job's load step. Best
   * effort: a failure is logged (the load step replaces it, loadEverywhere). Answers the workers unloaded and those
   * that refused because the old adapter has requests in flight (`inUse`: the step asks the catch-up to hold the name
   * there once the digest is committed, AdapterCatchUp.recheck).
   */
  async unloadOthers(name: string, path: string, digest: string): Promise<{ unloaded: string[]; inUse: string[] }> {
    const unloaded: string[] = [];
    const inUse: string[] = [];
    for (const c of this.workers.acceptingConnections()) {
      const held: Held = { path: c.adapterPath(name), digest: c.adapterDigest(name) };
      if (!c.serves(name) || !heldOther(held, path, digest)) continue;
      try {
        await this.unloadOn(c, name);
        unloaded.push(c.addr);
        this.logger.warn(`unloaded ${name} from worker ${c.addr}: it held an older job's adapter (from ${held.path ?? ''}, digest ${held.digest ?? 'unknown'}), not ${path} with digest ${digest}`);
      } catch (err) {
        if (refusedInUse(err)) inUse.push(c.addr);
        this.logger.warn(`could not unload an older job's ${name} from worker ${c.addr} (its load step replaces it): ${(err as Error).message}`);
      }
    }
    return { unloaded, inUse };
  }

  /**
   * Loads the adapter on one worker (ALREADY_EXISTS counts as done), then re-reads its model list; also AdapterCatchUp's.
   * Answers the digest of what it loaded (LoadAdapter's answer), or after ALREADY_EXISTS the one its model list reports
   * for the name (re-read; the last one read if that fails; undefined: none, e.g. an older worker).
   */
  async loadOn(c: WorkerConnection, name: string, path: string, param = 'adapter'): Promise<Loaded> {
    let card: common.ModelCard | null = null;
    try {
      card = await unary(c.rpc.loadAdapter.bind(c.rpc), { name, path });
    } catch (err) {
      if ((err as ServiceError).code !== status.ALREADY_EXISTS) throw toAdminError(err, param);
    }
    await c.refreshInfo().catch(() => undefined);
    return card !== null ? { fresh: true, digest: asDigest(card.digest) } : { fresh: false, digest: c.adapterDigest(name) };
  }

  /**
   * Unloads the adapter from every accepting worker, each tried even when another failed (before, the first failure
   * stopped it: the workers after it kept the adapter, e.g. a failed onboarding's); then, if any failed, one
   * UnloadFailed: the code and message of the one failure, or of the first that is not a refusal in use (else
   * FAILED_PRECONDITION) with every failure's message; `inUse`, the workers that refused with requests in flight.
   */
  async unloadEverywhere(name: string): Promise<void> {
    const conns = this.ready();
    const failures: Array<{ addr: string; err: InlaidError }> = [];
    for (const c of conns) {
      try {
        await this.unloadOn(c, name);
      } catch (err) {
        failures.push({ addr: c.addr, err: toAdminError(err) });
        this.logger.warn(`could not unload ${name} from worker ${c.addr}: ${(err as Error).message}`);
      }
    }
    if (failures.length === 0) return;
    const inUse = failures.filter((f) => refusedInUse(f.err)).map((f) => f.addr);
    const first = (failures.find((f) => !refusedInUse(f.err)) ?? failures[0]) as { err: InlaidError };
    const message = failures.length === 1 ? first.err.message : `\`${name}\` could not be unloaded from ${failures.length} of ${conns.length} workers: ${[...new Set(failures.map((f) => f.err.message))].join('; ')}`;
    throw new UnloadFailed(first.err.status, message, inUse, first.err.details, inUse.length === failures.length);
  }

  /** Unloads the adapter from one worker (NOT_FOUND counts as done), then re-reads its model list; also AdapterCatchUp's. */
  async unloadOn(c: WorkerConnection, name: string): Promise<void> {
    try {
      await unary(c.rpc.unloadAdapter.bind(c.rpc), { name });
    } catch (err) {
      if (markedInUse(err)) throw new AdapterInUse((err as ServiceError).details ?? (err as Error).message);
      if ((err as ServiceError).code !== status.NOT_FOUND) throw toAdminError(err);
    }
    await c.refreshInfo().catch(() => undefined);
  }

  /**
   * Re-quantizes once per checkpoint store: the store's first accepting worker (WORKER_ADDRS order) quantizes,
   * the others follow; resolves with the DONE event once every accepting worker serves the new version.
   */
  requantize(add: readonly QuantTaskSpec[], remove: readonly string[], onProgress: ProgressSink): Promise<worker.RequantizeProgress> {
    return new SharedRequantize(() => this.workers.acceptingConnections(), (err) => toAdminError(err)).run(add, remove, onProgress);
  }
}

/**
 * A real grpc-js fake worker for the adapter catch-up specs: base model `m`, the adapters it holds (name -> the path
 * LoadAdapter read and the content digest of what it read there), and a "disk" (path -> the digest of the files there
 * now, shared by the fake workers of a spec) that ValidateAdapter and LoadAdapter read. It records its loads,
 * unloads, validations, failed loads and refused unloads, and the Prepares and Admits it got (naming the adapter path
 * each met: which adapter a request reached). Its Prepare answers a model it does not list NOT_FOUND as a worker does
 * (the kind in trailing metadata: UNKNOWN_MODEL).
 */
import { Metadata, Server, ServerCredentials, status, type ServerDuplexStream } from '@grpc/grpc-js';
import { common, worker } from '@inlaid/proto';
import { WORKER_ERROR_KIND_KEY } from '../common/inlaid-error';
import { bindLocal } from './local-grpc';

type Callback<T> = (e: Partial<Error & { code: number; metadata: Metadata }> | null, r?: T) => void;

/**
 * An adapter a fake worker holds: the path it was loaded from and the digest of what was read there; path '': one of
 * its own (its --adapters-dir, a checkpoint), listed but not in WorkerInfo.adapter_paths / adapter_digests.
 */
export interface HeldAdapter {
  path: string;
  digest: string;
}

export interface FakeWorkerOptions {
  /** false: an older worker, which reports no digest (WorkerInfo.adapter_digests, ModelCard.digest). */
  digests?: boolean;
  /** LoadAdapter of these names fails (UNAVAILABLE), for as long as they are in FakeWorker.failing. */
  failing?: string[];
  /** UnloadAdapter of these names fails (FAILED_PRECONDITION marked in use: requests in flight), for as long as they are in FakeWorker.busy. */
  busy?: string[];
}

export interface FakeWorker {
  server: Server;
  port: number;
  adapters: Map<string, HeldAdapter>;
  /** `name path` of each LoadAdapter that loaded. */
  loads: string[];
  unloads: string[];
  /** `name path` of each ValidateAdapter. */
  validations: string[];
  /** The names of the LoadAdapter calls that failed (FakeWorker.failing). */
  failedLoads: string[];
  /** The names of the UnloadAdapter calls refused (FakeWorker.busy). */
  refusedUnloads: string[];
  /** `model path` of each Prepare (path: the adapter's LoadAdapter path, '' for the base or its own; `404` for a model it does not list). */
  prepares: string[];
  /** `model path` of each Admit on its Session (path as for prepares). */
  admits: string[];
  digests: boolean;
  failing: Set<string>;
  busy: Set<string>;
  /** UnloadAdapter of these names fails FAILED_PRECONDITION without the in-use marker (another refusal). */
  unmarked: Set<string>;
}

/** Starts a fake worker on `port` (0: a free one) holding `loaded` (a gateway loaded them before its link went down). */
export async function startFakeWorker(
  disk: ReadonlyMap<string, string>,
  port: number,
  loaded: Record<string, HeldAdapter> = {},
  opts: FakeWorkerOptions = {},
): Promise<FakeWorker> {
  const w: FakeWorker = {
    server: new Server(), port, adapters: new Map(Object.entries(loaded)), loads: [], unloads: [], validations: [], failedLoads: [], refusedUnloads: [], prepares: [], admits: [],
    digests: opts.digests ?? true, failing: new Set(opts.failing), busy: new Set(opts.busy), unmarked: new Set(),
  };
  const card = (name: string, digest: string) => common.ModelCard.fromPartial({ id: name, parent: 'm', rank: 4, targetModules: ['q_proj'], digest: w.digests ? digest : '' });
  const getInfo = (_call: unknown, cb: Callback<worker.WorkerInfo>) => {
    const named = [...w.adapters];
    const loaded = named.filter(([, a]) => a.path !== '');
    cb(null, worker.WorkerInfo.fromPartial({
      workerId: `w${w.port}`, baseModel: 'm', models: [{ id: 'm', parent: '' }, ...named.map(([id]) => ({ id, parent: 'm' }))],
      state: { totalKvBlocks: 64, freeKvBlocks: 64, blockSize: 16 },
      adapterPaths: Object.fromEntries(loaded.map(([n, a]) => [n, a.path])),
      adapterDigests: w.digests ? Object.fromEntries(loaded.map(([n, a]) => [n, a.digest])) : {},
    }));
  };
  const validateAdapter = (call: { request: worker.LoadAdapterRequest }, cb: Callback<common.ModelCard>) => {
    const { name, path } = call.request;
    w.validations.push(`${name} ${path}`);
    const digest = disk.get(path);
    if (digest === undefined) return cb({ code: status.INVALID_ARGUMENT, message: `${path} not found` });
    cb(null, card(name, digest));
  };
  const loadAdapter = (call: { request: worker.LoadAdapterRequest }, cb: Callback<common.ModelCard>) => {
    const { name, path } = call.request;
    if (w.failing.has(name)) {
      w.failedLoads.push(name);
      return cb({ code: status.UNAVAILABLE, message: 'busy' });
    }
    if (w.adapters.has(name)) return cb({ code: status.ALREADY_EXISTS, message: `${name} exists` });
    const digest = disk.get(path) ?? '';
    w.loads.push(`${name} ${path}`);
    w.adapters.set(name, { path, digest });
    cb(null, card(name, digest));
  };
  const unloadAdapter = (call: { request: worker.UnloadAdapterRequest }, cb: Callback<worker.UnloadAdapterResponse>) => {
    if (w.unmarked.has(call.request.name)) return cb({ code: status.FAILED_PRECONDITION, message: `${call.request.name}: not now` });
    if (w.busy.has(call.request.name)) {
      w.refusedUnloads.push(call.request.name);
      // marked as the worker marks it (server/servicer.py: trailing metadata inlaid-refusal: adapter-in-use)
      const metadata = new Metadata();
      metadata.set('inlaid-refusal', 'adapter-in-use');
      return cb({ code: status.FAILED_PRECONDITION, message: `${call.request.name} has requests in flight`, metadata });
    }
    if (!w.adapters.delete(call.request.name)) return cb({ code: status.NOT_FOUND, message: 'unknown' });
    w.unloads.push(call.request.name);
    cb(null, worker.UnloadAdapterResponse.fromPartial({}));
  };
  /** `model path` of what a request for `model` meets here now, or undefined when it does not list the model. */
  const met = (model: string): string | undefined => (model === 'm' ? 'm ' : w.adapters.has(model) ? `${model} ${w.adapters.get(model)?.path}` : undefined);
  const prepare = (call: { request: worker.PrepareRequest }, cb: Callback<worker.PrepareResponse>) => {
    const { model } = call.request;
    const at = met(model);
    w.prepares.push(at ?? `${model} 404`);
    if (at !== undefined) return cb(null, worker.PrepareResponse.fromPartial({ promptTokenIds: [7, 8], maxTokens: 2 }));
    const metadata = new Metadata();
    metadata.set(WORKER_ERROR_KIND_KEY, 'REQUEST_ERROR_KIND_UNKNOWN_MODEL');
    cb({ code: status.NOT_FOUND, message: `The model \`${model}\` does not exist.`, metadata });
  };
  const session = (call: ServerDuplexStream<worker.ControlMessage, worker.WorkerEvent>) => {
    call.on('error', () => undefined);
    call.on('data', (m: worker.ControlMessage) => {
      if (m.kind?.$case === 'admit') w.admits.push(met(m.kind.value.model) ?? `${m.kind.value.model} 404`);
    });
  };
  w.server.addService(worker.WorkerService, { getInfo, session, validateAdapter, loadAdapter, unloadAdapter, prepare } as unknown as worker.WorkerServer);
  w.port = port === 0
    ? await bindLocal(w.server)
    : await new Promise<number>((resolve, reject) => w.server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return w;
}

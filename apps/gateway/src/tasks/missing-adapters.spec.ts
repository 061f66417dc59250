/** What the adapter catch-up does with one task on one worker (pure: catchUpAction, catchUpTasks, catchUpHolds). */
import { catchUpAction, catchUpHolds, catchUpTasks, type LoadJob, type WorkerAdapter, type WorkerAdapters } from './missing-adapters';

const D1 = '1'.repeat(64);
const D2 = '2'.repeat(64);
const D3 = '3'.repeat(64);

const job = (task: string, adapterPath: string, fields: Partial<LoadJob>): LoadJob =>
  ({ id: `job-${task}`, task, kind: 'load', status: 'serving', adapterPath, adapterDigest: null, progress: { stages: {} }, ...fields } as unknown as LoadJob);
const served = (task: string, adapterPath: string, adapterDigest: string | null = null): LoadJob => job(task, adapterPath, { adapterDigest });
const ended = (task: string, adapterPath: string): LoadJob => job(task, adapterPath, { status: 'deleted' });
const loading = (task: string, adapterPath: string): LoadJob =>
  job(task, adapterPath, { kind: 'onboard', status: 'validating', progress: { stages: { load: { status: 'running' } } } } as unknown as Partial<LoadJob>);
/** A worker's report of one name: listed, from `path` (LoadAdapter's), with `digest`. */
const holds = (path: string | undefined, digest?: string, settled?: WorkerAdapter['settled']): WorkerAdapter => ({ listed: true, path, digest, settled });
const lacks: WorkerAdapter = { listed: false, path: undefined, digest: undefined };
const worker = (listed: string[], paths: Record<string, string>, digests: Record<string, string> = {}, settled: WorkerAdapters['settled'] = new Map()): WorkerAdapters =>
  ({ listed: new Set(listed), paths: new Map(Object.entries(paths)), digests: new Map(Object.entries(digests)), settled });

describe('catchUpAction', () => {
  it('loads a served task the worker lacks, replaces one it holds from another LoadAdapter path, keeps the same one', () => {
    expect(catchUpAction(served('t', '/a/v2'), lacks)).toBe('load');
    expect(catchUpAction(served('t', '/a/v2'), holds('/a/v1'))).toBe('replace'); // before: counted as loaded
    expect(catchUpAction(served('t', '/a/v2'), holds('/a/v2'))).toBe('none');
    expect(catchUpAction(served('t', '/a/v2'), holds(undefined))).toBe('none'); // its --adapters-dir
  });

  it("unloads a gateway-loaded adapter whose task is no longer served; keeps a live job's own and the worker's own", () => {
    expect(catchUpAction(ended('t', '/a/v1'), holds('/a/v1'))).toBe('unload'); // deleted while its link was down
    expect(catchUpAction(loading('t', '/a/v2'), holds('/a/v1'))).toBe('unload'); // a newer onboarding, not loaded yet
    expect(catchUpAction(loading('t', '/a/v2'), holds('/a/v2'))).toBe('none'); // its load step under way
    expect(catchUpAction(ended('t', '/a/v1'), holds(undefined))).toBe('none');
    expect(catchUpAction(null, holds('/a/v1'))).toBe('none'); // no job: not this gateway's
    expect(catchUpAction(ended('t', '/a/v1'), lacks)).toBe('none');
  });

  it('replaces an adapter held from the same path with another digest (rewritten in place since); unknown digests compare paths', () => {
    expect(catchUpAction(served('t', '/a/t', D2), holds('/a/t', D1))).toBe('replace'); // before: 'none', the old weights served on
    expect(catchUpAction(served('t', '/a/t', D2), holds('/a/t', D2))).toBe('none');
    expect(catchUpAction(served('t', '/a/t', D2), holds('/a/t', undefined))).toBe('none'); // an older worker: path only
    expect(catchUpAction(served('t', '/a/t', null), holds('/a/t', D1))).toBe('none'); // a job loaded before digests: path only
    expect(catchUpAction(served('t', '/a/v2', D1), holds('/a/v1', D1))).toBe('replace'); // another path, the same bytes: as before
  });

  it("unloads an adapter held from a live, not yet loaded job's path with another digest than its validation's", () => {
    const validated = (digest: string | null) => job('t', '/a/t', { kind: 'onboard', status: 'loading', adapterDigest: digest } as Partial<LoadJob>);
    expect(catchUpAction(validated(D2), holds('/a/t', D1))).toBe('unload'); // before: 'none', the old weights served meanwhile
    expect(catchUpAction(validated(D2), holds('/a/t', D2))).toBe('none'); // its own (a load step resumed after a crash)
    expect(catchUpAction(validated(D2), holds('/a/t', undefined))).toBe('none'); // an older worker: path only
    expect(catchUpAction(validated(null), holds('/a/t', D1))).toBe('none'); // queued, not validated yet: path only
    expect(catchUpAction(loading('t', '/a/t'), holds('/a/t', D1))).toBe('none');
  });

  it("does not replace again a digest the catch-up settled for the same job (no loop); another job's or digest's is replaced", () => {
    const t = served('t', '/a/t', D2);
    expect(catchUpAction(t, holds('/a/t', D3, { job: 'job-t', digest: D3 }))).toBe('none');
    expect(catchUpAction(t, holds('/a/t', D3, { job: 'an-older-job', digest: D3 }))).toBe('replace');
    expect(catchUpAction(t, holds('/a/t', D1, { job: 'job-t', digest: D3 }))).toBe('replace'); // not what was settled
  });
});

describe('catchUpTasks', () => {
  it('names the tasks missing, held from another path, or held from a path no live job has', () => {
    const jobs = [served('miss', '/a/miss'), served('same', '/a/same'), served('stale', '/a/stale2'), ended('gone', '/a/gone')];
    const w = worker(['same', 'stale', 'gone', 'own'], { same: '/a/same', stale: '/a/stale1', gone: '/a/gone' });
    expect(catchUpTasks(jobs, w)).toEqual(['gone', 'miss', 'stale']);
  });

  it('names a task held from its path with another digest, not one with the same, an unknown or a settled digest', () => {
    const jobs = [served('rewritten', '/a/r', D2), served('same', '/a/s', D1), served('older', '/a/o', D1), served('nodigest', '/a/n'),
      served('settled', '/a/x', D2)];
    const paths = { rewritten: '/a/r', same: '/a/s', older: '/a/o', nodigest: '/a/n', settled: '/a/x' };
    const w = worker(Object.keys(paths), paths, { rewritten: D1, same: D1, nodigest: D3, settled: D3 }, new Map([['settled', { job: 'job-settled', digest: D3 }]]));
    expect(catchUpTasks(jobs, w)).toEqual(['rewritten']); // before: none ('older': the worker reports no digest)
  });
});

describe('catchUpHolds', () => {
  it('holds what the fleet serves and the worker lacks or holds from another path, and what to unload; not a job not served yet', () => {
    const queued = job('queued', '/a/queued', { kind: 'onboard', status: 'queued' });
    const jobs = [served('miss', '/a/miss'), served('stale', '/a/stale2'), loading('wait', '/a/wait'), queued, loading('newer', '/a/newer2')];
    const w = worker(['stale', 'gone', 'newer', 'own'], { stale: '/a/stale1', gone: '/a/gone', newer: '/a/newer1' });
    expect(catchUpTasks(jobs, w)).toEqual(['gone', 'miss', 'newer', 'queued', 'stale', 'wait']); // each looked at under its lock
    expect(catchUpHolds(catchUpTasks(jobs, w), jobs, w)).toEqual(['gone', 'miss', 'newer', 'stale']); // before: all six (queued, wait: a 30 s wait, then 503)
  });

  it("holds a live job's task, not loaded yet, that the worker holds from its path with another digest than its validation's", () => {
    const validated = job('t', '/a/t', { kind: 'onboard', status: 'quantizing', adapterDigest: D2 });
    const old = worker(['t'], { t: '/a/t' }, { t: D1 });
    expect(catchUpTasks([validated], old)).toEqual(['t']);
    expect(catchUpHolds(['t'], [validated], old)).toEqual(['t']); // to unload: its requests do not get the old weights
    const own = worker(['t'], { t: '/a/t' }, { t: D2 });
    expect(catchUpTasks([validated], own)).toEqual([]);
  });

  it('holds a task held from its path with another digest until replaced; not once its digest is settled for the job', () => {
    const jobs = [served('rw', '/a/rw', D2)];
    const stale = worker(['rw'], { rw: '/a/rw' }, { rw: D1 });
    expect(catchUpHolds(catchUpTasks(jobs, stale), jobs, stale)).toEqual(['rw']); // its requests wait for the new weights
    const settled = worker(['rw'], { rw: '/a/rw' }, { rw: D3 }, new Map([['rw', { job: 'job-rw', digest: D3 }]]));
    expect(catchUpHolds(['rw'], jobs, settled)).toEqual([]); // replaced once, the files changed again: served, not held on
  });
});

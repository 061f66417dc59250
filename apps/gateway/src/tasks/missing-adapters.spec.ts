/** What the adapter catch-up does with one task on one worker (pure: catchUpAction, catchUpTasks). */
import { catchUpAction, catchUpHolds, catchUpTasks, type LoadJob } from './missing-adapters';

const served = (task: string, adapterPath: string): LoadJob => ({ task, kind: 'load', status: 'serving', adapterPath, progress: { stages: {} } } as unknown as LoadJob);
const ended = (task: string, adapterPath: string): LoadJob => ({ task, kind: 'load', status: 'deleted', adapterPath, progress: { stages: {} } } as unknown as LoadJob);
const loading = (task: string, adapterPath: string): LoadJob =>
  ({ task, kind: 'onboard', status: 'validating', adapterPath, progress: { stages: { load: { status: 'running' } } } } as unknown as LoadJob);

describe('catchUpAction', () => {
  it('loads a served task the worker lacks, replaces one it holds from another LoadAdapter path, keeps the same one', () => {
    expect(catchUpAction(served('t', '/a/v2'), { listed: false, path: undefined })).toBe('load');
    expect(catchUpAction(served('t', '/a/v2'), { listed: true, path: '/a/v1' })).toBe('replace'); // before: counted as loaded
    expect(catchUpAction(served('t', '/a/v2'), { listed: true, path: '/a/v2' })).toBe('none');
    expect(catchUpAction(served('t', '/a/v2'), { listed: true, path: undefined })).toBe('none'); // its --adapters-dir
  });

  it("unloads a gateway-loaded adapter whose task is no longer served; keeps a live job's own and the worker's own", () => {
    expect(catchUpAction(ended('t', '/a/v1'), { listed: true, path: '/a/v1' })).toBe('unload'); // deleted while its link was down
    expect(catchUpAction(loading('t', '/a/v2'), { listed: true, path: '/a/v1' })).toBe('unload'); // a newer onboarding, not loaded yet
    expect(catchUpAction(loading('t', '/a/v2'), { listed: true, path: '/a/v2' })).toBe('none'); // its load step under way
    expect(catchUpAction(ended('t', '/a/v1'), { listed: true, path: undefined })).toBe('none');
    expect(catchUpAction(null, { listed: true, path: '/a/v1' })).toBe('none'); // no job: not this gateway's
    expect(catchUpAction(ended('t', '/a/v1'), { listed: false, path: undefined })).toBe('none');
  });
});

describe('catchUpTasks', () => {
  it('names the tasks missing, held from another path, or held from a path no live job has', () => {
    const jobs = [served('miss', '/a/miss'), served('same', '/a/same'), served('stale', '/a/stale2'), ended('gone', '/a/gone')];
    const listed = new Set(['same', 'stale', 'gone', 'own']);
    const paths = new Map([['same', '/a/same'], ['stale', '/a/stale1'], ['gone', '/a/gone']]);
    expect(catchUpTasks(jobs, listed, paths)).toEqual(['gone', 'miss', 'stale']);
  });
});

describe('catchUpHolds', () => {
  it('holds what the fleet serves and the worker lacks or holds from another path, and what to unload; not a job not served yet', () => {
    const queued = { task: 'queued', kind: 'onboard', status: 'queued', adapterPath: '/a/queued', progress: { stages: {} } } as unknown as LoadJob;
    const jobs = [served('miss', '/a/miss'), served('stale', '/a/stale2'), loading('wait', '/a/wait'), queued, loading('newer', '/a/newer2')];
    const listed = new Set(['stale', 'gone', 'newer', 'own']);
    const paths = new Map([['stale', '/a/stale1'], ['gone', '/a/gone'], ['newer', '/a/newer1']]);
    expect(catchUpTasks(jobs, listed, paths)).toEqual(['gone', 'miss', 'newer', 'queued', 'stale', 'wait']); // each looked at under its lock
    expect(catchUpHolds(catchUpTasks(jobs, listed, paths), jobs, listed, paths)).toEqual(['gone', 'miss', 'newer', 'stale']); // before: all six (queued, wait: a 30 s wait, then 503)
  });
});

import { completedRemovals, dropsAtNextVersion, freedOnboardings, removalsFirst, taskUploadDir } from './task-files';

const at = (s: number) => new Date(Date.UTC(2026, 10, 29, 22, 0, s));

describe('task files', () => {
  it('puts a task upload under <data dir>/tasks/<name>-<job id>', () => {
    expect(taskUploadDir('/data', 'sql', 'j1')).toBe('/data/tasks/sql-j1');
  });

  it('keeps the files of a task that is, or may be, in a checkpoint version until the next one', () => {
    expect(dropsAtNextVersion({ status: 'active', checkpointVersion: 3 })).toBe(true);
    expect(dropsAtNextVersion({ status: 'quantizing', checkpointVersion: null })).toBe(true);
    for (const status of ['queued', 'validating', 'loading', 'failed', 'active', 'serving']) {
      expect([status, dropsAtNextVersion({ status, checkpointVersion: null })]).toEqual([status, false]);
    }
  });

  it('runs first, alone, the removals of names the re-quantization adds again', () => {
    const removals = [{ id: 'd1', task: 'a', createdAt: at(1) }, { id: 'd2', task: 'b', createdAt: at(2) }];
    const split = removalsFirst(removals, ['b', 'c']);
    expect({ first: split.first.map((r) => r.id), rest: split.rest.map((r) => r.id) }).toEqual({ first: ['d2'], rest: ['d1'] });
    expect(removalsFirst(removals, []).first).toEqual([]);
  });

  it('completes only the removals of tasks the published version no longer holds', () => {
    const removals = [{ id: 'd1', task: 'a', createdAt: at(1) }, { id: 'd2', task: 'b', createdAt: at(2) }];
    expect(completedRemovals(removals, ['b', 'c']).map((r) => r.id)).toEqual(['d1']);
    expect(completedRemovals(removals, []).map((r) => r.id)).toEqual(['d1', 'd2']);
  });

  it('frees the deleted onboardings of the task made before the removal, never a later one or another task', () => {
    const rows = [
      { id: 'old', task: 'a', kind: 'onboard', status: 'deleted', createdAt: at(1) },
      { id: 'failed', task: 'a', kind: 'onboard', status: 'failed', createdAt: at(2) },
      { id: 'gone', task: 'a', kind: 'onboard', status: 'deleted', createdAt: at(3) },
      { id: 'rm', task: 'a', kind: 'delete', status: 'queued', createdAt: at(4) },
      { id: 'again', task: 'a', kind: 'onboard', status: 'deleted', createdAt: at(5) }, // its own removal frees it
      { id: 'live', task: 'a', kind: 'onboard', status: 'quantizing', createdAt: at(6) },
      { id: 'other', task: 'b', kind: 'onboard', status: 'deleted', createdAt: at(1) },
      { id: 'load', task: 'a', kind: 'load', status: 'deleted', createdAt: at(2) },
    ];
    expect(freedOnboardings(rows, { task: 'a', createdAt: at(4) }).map((j) => j.id)).toEqual(['old', 'gone']);
  });
});

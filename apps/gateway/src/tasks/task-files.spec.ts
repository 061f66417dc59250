import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { completedRemovals, dropsAtNextVersion, freedOnboardings, freesAtFailure, removalsFirst, removeTaskUploadDir, taskUploadDir, UnsafeRemoval } from './task-files';

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

  it('frees a failed task\'s files at once only if no re-quantization may read them', () => {
    for (const status of ['queued', 'validating', 'loading', 'activating']) expect([status, freesAtFailure({ status, checkpointVersion: null })]).toEqual([status, true]);
    expect(freesAtFailure({ status: 'quantizing', checkpointVersion: null })).toBe(false);
    expect(freesAtFailure({ status: 'activating', checkpointVersion: 2 })).toBe(false);
  });
});

describe('removeTaskUploadDir', () => {
  let root: string;
  let data: string;
  let outside: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'inlaid-files-'));
    data = join(root, 'data');
    outside = join(root, 'outside');
    mkdirSync(join(data, 'tasks'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep.txt'), 'not ours');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('removes the directory and what is in it, and is idempotent', async () => {
    const dir = taskUploadDir(data, 'sql', 'j1');
    mkdirSync(join(dir, 'adapter'), { recursive: true });
    writeFileSync(join(dir, 'adapter', 'adapter_model.safetensors'), 'x');
    writeFileSync(join(dir, 'calibration.jsonl'), '{}');
    expect(await removeTaskUploadDir(data, 'sql', 'j1')).toBe('removed');
    expect(existsSync(dir)).toBe(false);
    expect(await removeTaskUploadDir(data, 'sql', 'j1')).toBe('absent');
    expect(existsSync(join(data, 'tasks'))).toBe(true);
  });

  it('unlinks a link inside the directory without following it', async () => {
    const dir = taskUploadDir(data, 'sql', 'j2');
    mkdirSync(dir, { recursive: true });
    symlinkSync(outside, join(dir, 'adapter'));
    symlinkSync(join(outside, 'keep.txt'), join(dir, 'calibration.jsonl'));
    expect(await removeTaskUploadDir(data, 'sql', 'j2')).toBe('removed');
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(join(outside, 'keep.txt'))).toBe(true);
  });

  it('refuses an entry that is a link (to a directory outside the root), leaving both in place', async () => {
    symlinkSync(outside, taskUploadDir(data, 'sql', 'j3'));
    await expect(removeTaskUploadDir(data, 'sql', 'j3')).rejects.toBeInstanceOf(UnsafeRemoval);
    expect(existsSync(join(outside, 'keep.txt'))).toBe(true);
    expect(existsSync(taskUploadDir(data, 'sql', 'j3'))).toBe(true);
  });

  it('refuses a name that leaves INLAID_DATA_DIR/tasks or is not one entry of it', async () => {
    mkdirSync(join(data, 'tasks', 'a'), { recursive: true });
    for (const [task, job] of [['../../outside', ''], ['..', '/../../outside'], ['a', '/b'], ['a\\..', 'x'], ['a\0', 'x']]) {
      await expect(removeTaskUploadDir(data, task as string, job as string)).rejects.toBeInstanceOf(UnsafeRemoval);
    }
    expect(existsSync(join(outside, 'keep.txt'))).toBe(true);
    expect(existsSync(join(data, 'tasks', 'a'))).toBe(true);
  });

  it('refuses a plain file in place of the directory', async () => {
    writeFileSync(taskUploadDir(data, 'sql', 'j4'), 'x');
    await expect(removeTaskUploadDir(data, 'sql', 'j4')).rejects.toBeInstanceOf(UnsafeRemoval);
  });
});

import { TaskJob, TaskJobStatus } from '../entities/task-job.entity';
import { testDatabase, undoThrough } from '../testing/test-database';

describe('migration 1764600000000: one live onboard/load job per task name (real Postgres)', () => {
  const db = testDatabase('inlaid_livename');

  const jobs = () => db().getRepository(TaskJob);
  // (raw SQL: the entity also names columns that later migrations add)
  const add = (id: string, task: string, status: TaskJobStatus, kind: 'onboard' | 'load' | 'delete' = 'onboard', createdAt = new Date()) =>
    db().query(`INSERT INTO task_jobs (id, task, kind, status, created_at) VALUES ($1, $2, $3, $4, $5)`, [id, task, kind, status, createdAt]);

  it('keeps the newest of live duplicates written before it, marks the others failed, then refuses a second live job', async () => {
    await undoThrough(db(), 'TaskJobsLiveName1764600000000');
    await add('old', 'dup', 'active', 'onboard', new Date(Date.now() - 3000));
    await add('mid', 'dup', 'loading', 'onboard', new Date(Date.now() - 2000));
    await add('new', 'dup', 'queued', 'onboard', new Date(Date.now() - 1000));
    await add('gone', 'dup', 'failed');
    await add('other', 'solo', 'serving', 'load');
    await db().runMigrations({ transaction: 'each' });

    const rows = new Map((await jobs().find()).map((j) => [j.id, j]));
    expect(Object.fromEntries([...rows].map(([id, j]) => [id, j.status]))).toEqual({ old: 'failed', mid: 'failed', new: 'queued', gone: 'failed', other: 'serving' });
    expect(rows.get('old')?.error).toBe('superseded: a later job created the same task name concurrently');
    expect(rows.get('mid')?.history.map((e) => e.status)).toEqual(['failed']);
    expect(rows.get('gone')?.error).toBeNull();

    await expect(add('twin', 'dup', 'queued')).rejects.toThrow(/idx_task_jobs_live_task/);
    await expect(add('twin-load', 'dup', 'serving', 'load')).rejects.toThrow(/idx_task_jobs_live_task/);
    await add('refused', 'dup', 'failed'); // a refusal record is no live job
    await add('removal', 'dup', 'queued', 'delete'); // nor is a queued removal
    await jobs().update({ id: 'new' }, { status: 'deleted' });
    await add('reuse', 'dup', 'queued'); // the name is free again once its live job is deleted
    expect(await jobs().countBy({ task: 'dup', status: 'queued', kind: 'onboard' })).toBe(1);
  });
});

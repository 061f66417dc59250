import { TaskJob } from '../entities/task-job.entity';
import { testDatabase, undoThrough } from '../testing/test-database';

describe('migration 1764900000000: task_jobs.adapter_digest (real Postgres)', () => {
  const db = testDatabase('inlaid_adapterdigest');

  const digestOf = async (id: string): Promise<string | null> => (await db().getRepository(TaskJob).findOneByOrFail({ id })).adapterDigest;
  const columns = async (): Promise<string[]> =>
    (await db().query(`SELECT column_name FROM information_schema.columns WHERE table_name = 'task_jobs'`) as Array<{ column_name: string }>).map((c) => c.column_name);

  it('adds a nullable digest (rows written before get NULL), refuses a malformed one, and drops it on the way down', async () => {
    await undoThrough(db(), 'TaskJobsAdapterDigest1764900000000');
    expect(await columns()).not.toContain('adapter_digest');
    await db().query(`INSERT INTO task_jobs (id, task, kind, status, adapter_path) VALUES ('old', 'sql', 'load', 'serving', '/a/sql')`);
    await db().runMigrations({ transaction: 'each' });
    expect(await digestOf('old')).toBeNull(); // unknown: the catch-up compares its path only

    const digest = 'ab'.repeat(32);
    await db().getRepository(TaskJob).update({ id: 'old' }, { adapterDigest: digest });
    expect(await digestOf('old')).toBe(digest);
    for (const bad of ['AB'.repeat(32), 'ab'.repeat(31), `${'ab'.repeat(32)}0`, '', 'not hex at all']) {
      await expect(db().query(`UPDATE task_jobs SET adapter_digest = $1 WHERE id = 'old'`, [bad])).rejects.toThrow('task_jobs_adapter_digest_format');
    }
    expect(await digestOf('old')).toBe(digest);

    await undoThrough(db(), 'TaskJobsAdapterDigest1764900000000'); // (and any later migration)
    expect(await columns()).not.toContain('adapter_digest');
    expect(await db().query(`SELECT id FROM task_jobs`)).toEqual([{ id: 'old' }]);
    await db().runMigrations({ transaction: 'each' });
    expect(await digestOf('old')).toBeNull();
  });
});

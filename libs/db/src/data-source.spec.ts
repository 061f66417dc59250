import { randomBytes } from 'node:crypto';
import { dataSourceOptions, MIGRATIONS, openDatabase } from './data-source';
import { TaskJob } from './entities/task-job.entity';
import { RequestRecord } from './entities/request-record.entity';
import { Task } from './entities/task.entity';
import { databaseName, dropDatabase, ensureDatabase } from './ensure-database';

const url = `postgres://postgres@127.0.0.1:5432/inlaid_dbspec_${randomBytes(4).toString('hex')}`;

describe('openDatabase (real Postgres)', () => {
  it('opens at most poolSize connections at once (default 10)', async () => {
    expect((dataSourceOptions(url).extra as { max: number }).max).toBe(10);
    const ds = await openDatabase(url, 3);
    try {
      const held = await Promise.all(Array.from({ length: 3 }, async () => {
        const runner = ds.createQueryRunner();
        await runner.connect();
        return runner;
      }));
      const fourth = ds.query('SELECT 1').then(() => 'ran', () => 'failed');
      const raced = await Promise.race([fourth, new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      expect(raced).toBe('waiting');
      await held[0]?.release();
      expect(await fourth).toBe('ran');
      await Promise.all(held.slice(1).map((r) => r.release()));
    } finally {
      await ds.destroy();
    }
  });

  afterAll(async () => {
    await dropDatabase(url);
  });

  it('creates the database, migrates up, stores rows, and migrates down', async () => {
    const ds = await openDatabase(url);
    try {
      expect(await ensureDatabase(url)).toBe(false);
      await ds.getRepository(Task).save({ name: 'sql', adapterLocation: '/a', rank: 8, targetModules: ['q_proj', 'v_proj'] });
      await ds.getRepository(RequestRecord).insert({
        id: 'r1', task: 'sql', api: 'completions', arrival: new Date(), tokensIn: 3, tokensOut: 5, status: 'completed',
      });
      const task = await ds.getRepository(Task).findOneByOrFail({ name: 'sql' });
      expect(task.targetModules).toEqual(['q_proj', 'v_proj']);
      expect(task.status).toBe('registered');
      expect(await ds.getRepository(RequestRecord).countBy({ task: 'sql' })).toBe(1);
      expect(await ds.showMigrations()).toBe(false);

      await ds.getRepository(TaskJob).insert({ id: 'j1', task: 'sql', kind: 'onboard', status: 'queued' });
      const job = await ds.getRepository(TaskJob).findOneByOrFail({ id: 'j1' });
      expect(job.progress).toEqual({ stages: {}, layers: [] });
      expect(job.history).toEqual([]);

      for (let i = 0; i < MIGRATIONS.length; i++) await ds.undoLastMigration();
      const tables = await ds.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`);
      expect(tables.map((t: { tablename: string }) => t.tablename).sort()).toEqual(['migrations']);
    } finally {
      await ds.destroy();
    }
  });

  it('parses the database name from the URL', () => {
    expect(databaseName('postgres://u@h:1/my%20db')).toBe('my db');
    expect(() => databaseName('postgres://u@h:1/')).toThrow(/names no database/);
  });
});

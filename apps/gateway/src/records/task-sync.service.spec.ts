import type { DataSource } from 'typeorm';
import type { worker } from '@inlaid/proto';
import type { WorkersService } from '../workers/workers.service';
import { TaskSyncService } from './task-sync.service';

function info(...adapters: string[]): worker.WorkerInfo {
  const card = (id: string, parent: string) => ({ id, parent, rank: parent === '' ? 0 : 4, targetModules: [], maxModelLen: 256 });
  return { models: [card('base', ''), ...adapters.map((a) => card(a, 'base'))] } as unknown as worker.WorkerInfo;
}

describe('TaskSyncService', () => {
  function make() {
    const written: string[][] = [];
    const db = { down: false };
    const repo = {
      upsert: async (rows: Array<{ name: string }>) => {
        if (db.down) throw new Error('db down');
        written.push(rows.map((r) => r.name));
      },
    };
    const ds = { getRepository: () => repo } as unknown as DataSource;
    return { sync: new TaskSyncService(ds, {} as WorkersService), written, db };
  }

  it('writes only the adapters new since the worker last reported (a load costs one row, not all of them)', async () => {
    const { sync, written } = make();
    await sync.sync('w1', info('a', 'b'));
    await sync.sync('w1', info('a', 'b', 'c'));
    await sync.sync('w1', info('a', 'b', 'c'));
    await sync.sync('w2', info('a'));
    await sync.sync('w1', info('a', 'c')); // b unloaded
    await sync.sync('w1', info('a', 'b', 'c')); // b loaded again: written again
    expect(written).toEqual([['a', 'b'], ['c'], ['a'], ['b']]);
  });

  it('after a failed write, the next report writes everything again', async () => {
    const { sync, written, db } = make();
    db.down = true;
    await sync.sync('w1', info('a'));
    db.down = false;
    await sync.sync('w1', info('a'));
    expect(written).toEqual([['a']]);
  });
});

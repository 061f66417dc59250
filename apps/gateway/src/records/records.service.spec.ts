import { Logger } from '@nestjs/common';
import type { RequestRecord } from '@inlaid/db';
import { testDatabase } from '@inlaid/db/testing';
import type { DataSource } from 'typeorm';
import { RecordRow, RecordsService } from './records.service';

const db = testDatabase('inlaid_records');

/** The test database, unreachable (every write refused as a connection error) while `down()` holds. */
function reachableWhen(up: () => boolean): DataSource {
  const refused = () => {
    throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  };
  return new Proxy(db(), { get: (ds, key) => (key === 'getRepository' && !up() ? refused : Reflect.get(ds, key, ds)) });
}

const record = (id: string, status: RequestRecord['status'] = 'completed'): RecordRow =>
  ({ id, task: 'sql', api: 'grpc', arrival: new Date(), firstToken: null, finish: null, tokensIn: 1, tokensOut: 0, status, finishReason: null, error: null, worker: null });

const written = async (prefix: string): Promise<string[]> =>
  ((await db().query(`SELECT id FROM request_records WHERE id LIKE $1 ORDER BY arrival, id`, [`${prefix}%`])) as Array<{ id: string }>).map((r) => r.id);

describe('RecordsService.flush (real Postgres)', () => {
  let warn: jest.SpyInstance;
  beforeEach(() => {
    warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => warn.mockRestore());

  it('writes the good rows of a batch Postgres refuses for one bad row (22021: a NUL), drops that row, and requeues nothing', async () => {
    const svc = new RecordsService(db());
    for (const id of ['nul-a', 'nul-evil\u0000id', 'nul-b']) svc.add(record(id));
    await svc.flush();
    expect(await written('nul-')).toEqual(['nul-a', 'nul-b']);
    expect(svc.buffered).toBe(0);
    expect(warn.mock.calls.some(([m]) => String(m).includes('"nul-evil\\u0000id" dropped') && String(m).includes('0x00'))).toBe(true);
    // later records are no longer stuck behind it
    svc.add(record('nul-c'));
    await svc.flush();
    expect(await written('nul-')).toEqual(['nul-a', 'nul-b', 'nul-c']);
  });

  it('keeps requeueing the whole batch while Postgres is unreachable', async () => {
    let up = false;
    const svc = new RecordsService(reachableWhen(() => up));
    for (const id of ['down-a', 'down-b']) svc.add(record(id));
    await svc.flush();
    expect(svc.buffered).toBe(2);
    expect(await written('down-')).toEqual([]);
    up = true;
    await svc.flush();
    expect(await written('down-')).toEqual(['down-a', 'down-b']);
    expect(svc.buffered).toBe(0);
  });
});

describe('RecordsService on Postgres', () => {
  /** A RecordsService on the test database, and every row it was given (`seen`, as its listeners get them). */
  function service(): { svc: RecordsService; seen: RecordRow[] } {
    const svc = new RecordsService(db());
    const seen: RecordRow[] = [];
    svc.onRecord((r) => seen.push(r));
    return { svc, seen };
  }

  it('keeps the record of each request that reused a request id (before: the later one was dropped)', async () => {
    const { svc, seen } = service();
    svc.add(record('bootstrap:0/job-1', 'completed'));
    await svc.flush();
    svc.add(record('bootstrap:0/job-1', 'aborted'));
    await svc.flush();
    const rows = (await db().query(`SELECT status FROM request_records WHERE id = 'bootstrap:0/job-1' ORDER BY arrival`)) as Array<{ status: string }>;
    expect(rows.map((r) => r.status)).toEqual(['completed', 'aborted']);
    expect(new Set(seen.map((r) => r.recordId)).size).toBe(2);
  });

  it('leaves each row its own record_id when a batch holds a row already written (a retried write)', async () => {
    const { svc, seen } = service();
    svc.add(record('bootstrap:0/job-2', 'completed'));
    await svc.flush();
    const [first] = seen;
    const key = first?.recordId;
    svc.add(first as RecordRow); // written again (its key kept), then a new row: the insert skips the first
    svc.add(record('bootstrap:0/job-2', 'aborted'));
    await svc.flush();
    // before: RETURNING's one row (the second's key) was mapped onto the first, the second's key left alone
    expect(seen.map((r) => r.recordId)).toEqual([key, key, seen[2]?.recordId]);
    const rows = (await db().query(`SELECT record_id, status FROM request_records WHERE id = 'bootstrap:0/job-2' ORDER BY arrival`)) as Array<{ record_id: string; status: string }>;
    expect(rows).toEqual([{ record_id: key, status: 'completed' }, { record_id: seen[2]?.recordId, status: 'aborted' }]);
  });
});

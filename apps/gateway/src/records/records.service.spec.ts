import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { dropDatabase, openDatabase, type RequestRecord } from '@inlaid/db';
import type { DataSource } from 'typeorm';
import { RecordRow, RecordsService } from './records.service';

/** A repository whose insert refuses any batch holding a row with a NUL in its id, as Postgres does (22021). */
function fakeDataSource(failWith: () => unknown = () => undefined) {
  const written: string[] = [];
  let batches = 0;
  const ds = {
    getRepository: () => ({
      createQueryBuilder: () => ({
        insert: () => ({
          values: (rows: RecordRow[]) => ({
            orIgnore: () => ({
              updateEntity: () => ({
                execute: async () => {
                  batches++;
                  const down = failWith();
                  if (down !== undefined) throw down;
                  if (rows.some((r) => r.id.includes('\u0000'))) {
                    throw Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: '22021' });
                  }
                  written.push(...rows.map((r) => r.id));
                },
              }),
            }),
          }),
        }),
      }),
    }),
  };
  return { ds: ds as unknown as DataSource, written, batches: () => batches };
}

const row = (id: string) => ({ id }) as RecordRow;

describe('RecordsService.flush', () => {
  let warn: jest.SpyInstance;
  beforeEach(() => {
    warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => warn.mockRestore());

  it('writes the good rows of a batch Postgres refuses for one bad row, drops that row, and requeues nothing', async () => {
    const { ds, written } = fakeDataSource();
    const svc = new RecordsService(ds);
    for (const id of ['a', 'evil\u0000id', 'b']) svc.add(row(id));
    await svc.flush();
    expect(written).toEqual(['a', 'b']);
    expect(svc.buffered).toBe(0);
    expect(warn.mock.calls.some(([m]) => String(m).includes('"evil\\u0000id" dropped'))).toBe(true);
    // later records are no longer stuck behind it
    svc.add(row('c'));
    await svc.flush();
    expect(written).toEqual(['a', 'b', 'c']);
  });

  it('keeps requeueing the whole batch when Postgres is unreachable', async () => {
    let down = true;
    const { ds, written } = fakeDataSource(() => (down ? Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) : undefined));
    const svc = new RecordsService(ds);
    for (const id of ['a', 'b']) svc.add(row(id));
    await svc.flush();
    expect(svc.buffered).toBe(2);
    expect(written).toEqual([]);
    down = false;
    await svc.flush();
    expect(written).toEqual(['a', 'b']);
    expect(svc.buffered).toBe(0);
  });
});

describe('RecordsService on Postgres', () => {
  const url = `postgres://postgres@127.0.0.1:5432/inlaid_records_${randomBytes(4).toString('hex')}`;
  let db: DataSource;

  beforeAll(async () => {
    db = await openDatabase(url);
  });

  afterAll(async () => {
    await db?.destroy();
    await dropDatabase(url);
  });

  /** A RecordsService on the test database, and every row it was given (`seen`, as its listeners get them). */
  function service(): { svc: RecordsService; seen: RecordRow[] } {
    const svc = new RecordsService(db);
    const seen: RecordRow[] = [];
    svc.onRecord((r) => seen.push(r));
    return { svc, seen };
  }

  const record = (id: string, status: RequestRecord['status']): RecordRow =>
    ({ id, task: 'sql', api: 'grpc', arrival: new Date(), firstToken: null, finish: null, tokensIn: 1, tokensOut: 0, status, finishReason: null, error: null, worker: null });

  it('keeps the record of each request that reused a request id (before: the later one was dropped)', async () => {
    const { svc, seen } = service();
    svc.add(record('bootstrap:0/job-1', 'completed'));
    await svc.flush();
    svc.add(record('bootstrap:0/job-1', 'aborted'));
    await svc.flush();
    const rows = (await db.query(`SELECT status FROM request_records WHERE id = 'bootstrap:0/job-1' ORDER BY arrival`)) as Array<{ status: string }>;
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
    const rows = (await db.query(`SELECT record_id, status FROM request_records WHERE id = 'bootstrap:0/job-2' ORDER BY arrival`)) as Array<{ record_id: string; status: string }>;
    expect(rows).toEqual([{ record_id: key, status: 'completed' }, { record_id: seen[2]?.recordId, status: 'aborted' }]);
  });
});

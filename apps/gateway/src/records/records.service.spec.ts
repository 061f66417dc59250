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

  it('keeps the record of each request that reused a request id (before: the later one was dropped)', async () => {
    const svc = new RecordsService(db);
    const seen: RecordRow[] = [];
    svc.onRecord((r) => seen.push(r));
    const record = (status: RequestRecord['status']): RecordRow =>
      ({ id: 'bootstrap:0/job-1', task: 'sql', api: 'grpc', arrival: new Date(), firstToken: null, finish: null, tokensIn: 1, tokensOut: 0, status, finishReason: null, error: null, worker: null });
    svc.add(record('completed'));
    await svc.flush();
    svc.add(record('aborted'));
    await svc.flush();
    const rows = (await db.query(`SELECT status FROM request_records WHERE id = 'bootstrap:0/job-1' ORDER BY arrival`)) as Array<{ status: string }>;
    expect(rows.map((r) => r.status)).toEqual(['completed', 'aborted']);
    expect(new Set(seen.map((r) => r.recordId)).size).toBe(2);
  });
});

import { randomUUID } from 'node:crypto';
import { RequestRecord } from '../entities/request-record.entity';
import { testDatabase, undoThrough } from '../testing/test-database';

const MIGRATION = 'RequestRecordsKey1764700000000';

describe('migration 1764700000000: request records keyed by a record_id of their own (real Postgres)', () => {
  const db = testDatabase('inlaid_recordkey');

  const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, s));
  const row = (id: string, s: number, status: RequestRecord['status'] = 'completed', recordId?: string): RequestRecord => ({
    ...(recordId === undefined ? {} : { recordId }), id, task: 'sql', api: 'grpc', arrival: at(s), firstToken: at(s), finish: at(s + 1),
    tokensIn: 2, tokensOut: 3, status, finishReason: 'stop', error: null, worker: 'w',
  });
  /** As RecordsService writes a batch. */
  const write = (rows: RequestRecord[]) => db().getRepository(RequestRecord).createQueryBuilder().insert().values(rows).orIgnore().execute();
  /** As the gateway wrote a row before this migration (no record_id column yet). */
  const writeOld = (id: string, s: number, status: RequestRecord['status'] = 'completed') =>
    db().query(`INSERT INTO request_records (id, task, api, arrival, first_token, finish, tokens_in, tokens_out, status)
      VALUES ($1, 'sql', 'grpc', $2, $2, $3, 2, 3, $4) ON CONFLICT DO NOTHING`, [id, at(s), at(s + 1), status]);
  const rowsOf = async (id: string) =>
    (await db().query(`SELECT record_id, status FROM request_records WHERE id = $1 ORDER BY arrival`, [id])) as Array<{ record_id: string; status: string }>;
  const requests = async (): Promise<number> =>
    Number((await db().query(`SELECT sum(requests) AS n FROM request_rollups WHERE resolution_s = 60 AND task = ''`))[0].n);

  it('keeps the rows written before it (each a fresh key); a reused request id then keeps both rows; a retried batch is written once', async () => {
    await undoThrough(db(), MIGRATION);
    await writeOld('a/job-1', 0);
    await writeOld('b/job-1', 1);
    await writeOld('a/job-1', 2, 'failed'); // before: silently dropped
    expect((await db().query(`SELECT status FROM request_records WHERE id = 'a/job-1'`)) as unknown[]).toEqual([{ status: 'completed' }]);
    await db().runMigrations({ transaction: 'each' });

    const before = await rowsOf('a/job-1');
    expect(before).toHaveLength(1);
    expect(before[0]?.record_id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await rowsOf('b/job-1'))[0]?.record_id).not.toBe(before[0]?.record_id);

    const counted = await requests();
    const reused = row('a/job-1', 3, 'completed', randomUUID());
    await write([reused]);
    expect((await rowsOf('a/job-1')).map((r) => r.status)).toEqual(['completed', 'completed']);
    await write([reused, row('a/job-1', 4, 'aborted', randomUUID())]); // retried with one more row: `reused` is not doubled
    expect((await rowsOf('a/job-1')).map((r) => r.status)).toEqual(['completed', 'completed', 'aborted']);
    expect(await requests()).toBe(counted + 2); // the rollup trigger counts what was written, once
    await write([row('a/job-1', 5)]); // a row without a key gets the column default
    expect(await rowsOf('a/job-1')).toHaveLength(4);

    await db().query(`SET enable_seqscan = off`); // a table this small is read whole otherwise
    const indexed = (await db().query(`EXPLAIN SELECT * FROM request_records WHERE id = 'a/job-1'`)) as Array<{ 'QUERY PLAN': string }>;
    await db().query(`RESET enable_seqscan`);
    expect(indexed.map((p) => p['QUERY PLAN']).join('\n')).toMatch(/idx_request_records_id/);
  });

  it('down keeps the earliest row of each id, keyed by the id again; up again works', async () => {
    await undoThrough(db(), MIGRATION);
    expect((await db().query(`SELECT status FROM request_records WHERE id = 'a/job-1'`)) as unknown[]).toEqual([{ status: 'completed' }]);
    await expect(db().query(`INSERT INTO request_records (id, task, api, arrival, status) VALUES ('a/job-1', 'sql', 'grpc', now(), 'completed')`)).rejects.toThrow(/request_records_pkey/);
    await db().runMigrations({ transaction: 'each' });
    await write([row('a/job-1', 9, 'completed', randomUUID())]);
    expect(await rowsOf('a/job-1')).toHaveLength(2);
  });
});

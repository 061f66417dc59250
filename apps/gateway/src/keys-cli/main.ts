/** `npm run keys -- ...`: manages API keys in the gateway's Postgres (DATABASE_URL). Prints a new key once. */
import { parseConfig } from '@inlaid/config';
import { ApiKey, openDatabase } from '@inlaid/db';
import { createApiKey, listApiKeys, revokeApiKey } from '../auth/api-key-repo';
import { KeysCommand, parseKeysArgs, UsageError, USAGE } from './keys-args';
import { DataSource } from 'typeorm';

function describe(row: ApiKey): Record<string, unknown> {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    scopes: row.scopes,
    rpm: row.rateLimitRpm,
    concurrency: row.concurrencyLimit,
    created: row.createdAt.toISOString(),
    revoked: row.revokedAt?.toISOString() ?? null,
  };
}

async function run(db: DataSource, cmd: KeysCommand): Promise<number> {
  if (cmd.kind === 'create') {
    const { row, key } = await createApiKey(db, cmd.spec);
    process.stdout.write(`${JSON.stringify({ ...describe(row), key })}\n`);
    process.stderr.write('Store this key now: it is not kept and cannot be shown again.\n');
    return 0;
  }
  if (cmd.kind === 'list') {
    const rows = (await listApiKeys(db)).map(describe);
    if (cmd.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
    else console.table(rows);  
    return 0;
  }
  const n = await revokeApiKey(db, cmd.target);
  process.stderr.write(n === 1 ? `revoked ${cmd.target}\n` : `no live key matches ${cmd.target}\n`);
  return n === 1 ? 0 : 1;
}

async function main(argv: readonly string[]): Promise<number> {
  let cmd: KeysCommand;
  try {
    cmd = parseKeysArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`keys: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  const db = await openDatabase(parseConfig(process.env).databaseUrl);
  try {
    return await run(db, cmd);
  } finally {
    await db.destroy();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`keys: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

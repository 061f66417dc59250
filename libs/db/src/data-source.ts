/**
 * The one DataSource definition shared by the gateway and the TypeORM CLI: entities and migrations are
 * listed explicitly (no globs), so the same code works from ts-jest and from dist/. `synchronize` is off;
 * the schema only changes through migrations.
 */
import { DataSource, DataSourceOptions } from 'typeorm';
import { RequestRecord } from './entities/request-record.entity';
import { Task } from './entities/task.entity';
import { Init1735000000000 } from './migrations/1735000000000-init';
import { ensureDatabase } from './ensure-database';

export const ENTITIES = [Task, RequestRecord];
export const MIGRATIONS = [Init1735000000000];

export function dataSourceOptions(databaseUrl: string): DataSourceOptions {
  return {
    type: 'postgres',
    url: databaseUrl,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    synchronize: false,
    migrationsRun: false,
    logging: ['error'],
    extra: { max: 5, connectionTimeoutMillis: 5000 },
  };
}

export function createDataSource(databaseUrl: string): DataSource {
  return new DataSource(dataSourceOptions(databaseUrl));
}

/** Creates the database if missing, connects and applies pending migrations. */
export async function openDatabase(databaseUrl: string): Promise<DataSource> {
  await ensureDatabase(databaseUrl);
  const dataSource = createDataSource(databaseUrl);
  await dataSource.initialize();
  await dataSource.runMigrations({ transaction: 'each' });
  return dataSource;
}

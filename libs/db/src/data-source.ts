/**
 * The one DataSource definition shared by the gateway and the TypeORM CLI: entities and migrations are
 * listed explicitly (no globs), so the same code works from ts-jest and from dist/. `synchronize` is off;
 * the schema only changes through migrations.
 */
import { DataSource, DataSourceOptions } from 'typeorm';
import { ApiKey } from './entities/api-key.entity';
import { RequestRecord } from './entities/request-record.entity';
import { TaskJob } from './entities/task-job.entity';
import { Task } from './entities/task.entity';
import { Init1735000000000 } from './migrations/1735000000000-init';
import { TaskJobs1764400000000 } from './migrations/1764400000000-task-jobs';
import { ApiKeys1736000000000 } from './migrations/1736000000000-api-keys';
import { DashboardRollups1738000000000 } from './migrations/1738000000000-dashboard-rollups';
import { DashboardFineRollups1764500000000 } from './migrations/1764500000000-dashboard-fine-rollups';
import { TaskJobsLiveName1764600000000 } from './migrations/1764600000000-task-jobs-live-name';
import { RequestRecordsKey1764700000000 } from './migrations/1764700000000-request-records-key';
import { SloTargetsMs1764800000000 } from './migrations/1764800000000-slo-targets-ms';
import { TaskJobsAdapterDigest1764900000000 } from './migrations/1764900000000-task-jobs-adapter-digest';
import { ensureDatabase } from './ensure-database';

export const ENTITIES = [Task, RequestRecord, ApiKey, TaskJob];
export const MIGRATIONS = [Init1735000000000, ApiKeys1736000000000, DashboardRollups1738000000000, TaskJobs1764400000000,
  DashboardFineRollups1764500000000, TaskJobsLiveName1764600000000, RequestRecordsKey1764700000000, SloTargetsMs1764800000000,
  TaskJobsAdapterDigest1764900000000];

/** `poolSize`: connections the pool may open (the gateway's INLAID_DB_POOL). */
export function dataSourceOptions(databaseUrl: string, poolSize = 10): DataSourceOptions {
  return {
    type: 'postgres',
    url: databaseUrl,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: 'migrations',
    synchronize: false,
    migrationsRun: false,
    logging: ['error'],
    extra: { max: poolSize, connectionTimeoutMillis: 5000 },
  };
}

export function createDataSource(databaseUrl: string, poolSize = 10): DataSource {
  return new DataSource(dataSourceOptions(databaseUrl, poolSize));
}

/** Creates the database if missing, connects and applies pending migrations. */
export async function openDatabase(databaseUrl: string, poolSize = 10): Promise<DataSource> {
  await ensureDatabase(databaseUrl);
  const dataSource = createDataSource(databaseUrl, poolSize);
  await dataSource.initialize();
  await dataSource.runMigrations({ transaction: 'each' });
  return dataSource;
}

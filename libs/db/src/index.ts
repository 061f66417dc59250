// Public face of @inlaid/db: entities, the shared DataSource factory and database helpers.
export { RequestRecord, RequestStatus } from './entities/request-record.entity';
export { Task, TaskStatus } from './entities/task.entity';
export { createDataSource, dataSourceOptions, ENTITIES, MIGRATIONS, openDatabase } from './data-source';
export { databaseName, dropDatabase, ensureDatabase } from './ensure-database';

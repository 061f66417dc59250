// Public face of @inlaid/db: entities, the shared DataSource factory and database helpers.
export { API_KEY_SCOPES, ApiKey, type ApiKeyScope } from './entities/api-key.entity';
export { RequestRecord, RequestStatus } from './entities/request-record.entity';
export { Task, TaskStatus } from './entities/task.entity';
export { LayerProgress, LIVE_JOB_PREDICATE, LIVE_JOB_STATUSES, StageProgress, TaskJob, TaskJobEvent, TaskJobKind, TaskJobProgress, TaskJobStatus, WorkerQuantProgress } from './entities/task-job.entity';
export { createDataSource, dataSourceOptions, ENTITIES, MIGRATIONS, openDatabase } from './data-source';
export { databaseName, dropDatabase, ensureDatabase } from './ensure-database';
export { HIST_BOUNDS_MS as DASHBOARD_HIST_BOUNDS_MS } from './migrations/1764500000000-dashboard-fine-rollups';

// Public face of @inlaid/config: the gateway configuration, parsed and validated once from the environment.
export { ConfigError, GatewayConfig, parseConfig, TlsFiles, WORKER_TLS_ENV, WorkerTlsFiles } from './gateway-config';
export { MAX_TIMER_MS, parseTasksConfig, RECONCILE_JITTER, TasksConfig } from './tasks-config';
export { BudgetFixedPrefill, COST_FIT_MODES, COST_FIT_TERMS, LENGTH_PREDICTORS, LengthPredictorName, parseSchedulingConfig, SCHEDULING_POLICIES, SchedulingConfig, SchedulingPolicy, SLO_MS_MAX, SLO_MS_MIN } from './scheduling-config';
export { DashboardConfig, parseDashboardConfig } from './dashboard-config';

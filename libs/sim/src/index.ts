// Public face of @inlaid/sim: the discrete-event simulator, its cost model and report.
export * from './context-limit';
export * from './cost-model';
export * from './metrics';
export * from './simulator';
export * from './options';
export * from './request-dump';
export * from './step-terms';

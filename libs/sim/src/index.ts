// Public face of @inlaid/sim: the discrete-event simulator, its cost model and report.
export * from './cost-model';
export * from './metrics';
export * from './simulator';
export * from './options';
export * from './step-terms';

// Public face of @inlaid/scheduling: the Scheduler, its policies, length predictors and SLO helpers.
export * from './types';
export * from './config';
export { Scheduler } from './scheduler';
export { blocksFor } from './kv';
export { DEFAULT_SLO, SloTable, meetsSlo, tpotOf } from './slo';
export type { Policy, BatchView } from './policies/policy';
export * from './predictor/types';
export { QuantilePredictor, DEFAULT_QUANTILE_OPTIONS, PRIOR_PREDICTION, promptBucket } from './predictor/quantile-predictor';
export type { QuantilePredictorOptions } from './predictor/quantile-predictor';
export { MeanPredictor, ConstantPredictor } from './predictor/mean-predictor';
export { PromptPredictor, DEFAULT_PROMPT_OPTIONS } from './predictor/prompt-predictor';
export type { PromptPredictorOptions } from './predictor/prompt-predictor';
export { promptFeatures, words } from './predictor/features';
export { createPredictor, PREDICTOR_NAMES } from './predictor/factory';
export { predictedRemaining } from './predictor/remaining';
export { evaluatePredictor, spearman } from './predictor/evaluate';
export type { PredictorScore } from './predictor/evaluate';
export * from './testing';

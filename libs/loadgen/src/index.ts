// Public face of @inlaid/loadgen: trace replay against an OpenAI-compatible gateway and its metrics.
export * from './sse';
export * from './metrics';
export * from './prompt';
export * from './client';
export * from './replay';

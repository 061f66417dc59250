// Public face of @inlaid/workload: seeded trace generation, the JSONL trace format and its file I/O.
export { Rng } from './prng';
export * from './distributions';
export * from './profiles';
export { Popularity } from './popularity';
export * from './generator';
export * from './trace';
export * from './trace-io';
export * from './args';

/**
 * The cost model `npm run sim` uses without `--cost-model`: the most honest CPU calibration we have, the gateway's own
 * fit of the steps it served (`cpu-tiny-served-s7.json`: gRPC, engine loop and contention included; within 3% of the
 * real gateway + worker's throughput on a held-out trace at 20 req/s, bench/results/calibrate-cpu-2026-11-30-real20.md).
 * Until 2026-11-30 it was `cpu-tiny-measured.json` (engine steps timed alone on 2026-11-29), which is 64% too slow for
 * today's stack. Kept apart from cli.ts so that it can be tested without running the CLI.
 */
import { join } from 'node:path';

export const DEFAULT_COST_MODEL_FILE = 'cpu-tiny-served-s7.json';
export const DEFAULT_COST_MODEL = join(__dirname, '..', 'calibration', DEFAULT_COST_MODEL_FILE);

/**
 * Replays a trace in real time: each record is sent at its arrival_s (scaled by `timeScale`) after the
 * start, whether or not earlier requests finished (open loop), and all timings are collected.
 */
import { TraceRecord } from '@inlaid/workload';
import { ClientOptions, streamCompletion } from './client';
import { RequestTiming } from './metrics';
import { syntheticPrompt } from './prompt';

export interface ReplayOptions extends Omit<ClientOptions, 'now'> {
  /** Multiplies every arrival time (0.5 = twice the rate). */
  readonly timeScale: number;
}

export async function replay(trace: readonly TraceRecord[], o: ReplayOptions): Promise<RequestTiming[]> {
  if (!(o.timeScale >= 0)) throw new Error(`timeScale must be >= 0, got ${o.timeScale}`);
  const t0 = performance.now();
  const now = (): number => (performance.now() - t0) / 1000;
  const sleep = (s: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, s * 1000)));
  return Promise.all(
    trace.map(async (r) => {
      const sentS = r.arrival_s * o.timeScale;
      await sleep(sentS - now());
      const prompt = r.prompt ?? syntheticPrompt(r.prompt_tokens);
      return streamCompletion({ task: r.task, prompt, maxTokens: r.output_tokens, sentS }, { ...o, now });
    }),
  );
}

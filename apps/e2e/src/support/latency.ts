/** Latency samples of a probe polled in the background, their percentiles, and a process's RSS (tests, benches). */
import { readFileSync } from 'node:fs';

export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

export interface LatencySummary {
  n: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  failures: number;
}

export function summarize(samples: readonly number[], failures = 0): LatencySummary {
  const r = (x: number) => Math.round(x * 10) / 10;
  return { n: samples.length, p50_ms: r(percentile(samples, 50)), p99_ms: r(percentile(samples, 99)), max_ms: r(Math.max(...samples)), failures };
}

/** Calls `probe` back to back (with `gapMs` between calls) until stop() resolves; each call's wall time in ms. */
export function pollLatency(probe: () => Promise<boolean>, gapMs: number): { stop(): Promise<LatencySummary> } {
  const samples: number[] = [];
  let failures = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const ok = await probe().catch(() => false);
      samples.push(performance.now() - t0);
      if (!ok) failures++;
      await new Promise((r) => setTimeout(r, gapMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return summarize(samples, failures);
    },
  };
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(text);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

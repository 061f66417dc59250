import { generateTrace, GeneratorOptions } from './generator';
import { Popularity } from './popularity';
import { profilesFromPairs, syntheticProfiles } from './profiles';
import { Rng } from './prng';
import { formatTraceLine, parseTrace } from './trace';

const base: GeneratorOptions = { rate: 20, cv: 2, alpha: 1, durationS: 600, seed: 1 };

function interArrivals(ts: readonly number[]): number[] {
  return ts.slice(1).map((t, i) => t - ts[i]);
}

function meanSd(xs: readonly number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [m, Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1))];
}

describe('generateTrace', () => {
  const profiles = syntheticProfiles(100, 1);

  it('is reproducible: same seed same trace, other seed other trace', () => {
    const a = generateTrace(profiles, { ...base, durationS: 100 }).map(formatTraceLine);
    expect(generateTrace(syntheticProfiles(100, 1), { ...base, durationS: 100 }).map(formatTraceLine)).toEqual(a);
    expect(generateTrace(profiles, { ...base, durationS: 100, seed: 2 }).map(formatTraceLine)).not.toEqual(a);
  });

  it.each([
    [20, 2],
    [5, 1],
    [50, 0.5],
  ])('has mean rate %d and inter-arrival cv %d within tolerance', (rate, cv) => {
    const t = generateTrace(profiles, { ...base, rate, cv, durationS: 20_000 / rate });
    expect(t.length / (20_000 / rate)).toBeGreaterThan(rate * 0.95);
    expect(t.length / (20_000 / rate)).toBeLessThan(rate * 1.05);
    const [m, sd] = meanSd(interArrivals(t.map((r) => r.arrival_s)));
    expect(sd / m).toBeGreaterThan(cv * 0.9);
    expect(sd / m).toBeLessThan(cv * 1.1);
  });

  it('follows the power law: task 0 about 2^alpha times as frequent as task 1', () => {
    const t = generateTrace(profiles, { ...base, durationS: 2000 });
    const count = (name: string): number => t.filter((r) => r.task === name).length;
    expect(count('task-000') / count('task-001')).toBeCloseTo(2, 0);
    const uniform = new Popularity(4, 0);
    expect(uniform.probability(3)).toBeCloseTo(0.25);
  });

  it('samples real length pairs when given them', () => {
    const real = profilesFromPairs({ xsum: [[412, 37], [390, 41]], boolq: [[120, 1]] });
    const t = generateTrace(real, { ...base, durationS: 20 });
    for (const r of t) {
      const pairs = r.task === 'xsum' ? ['412/37', '390/41'] : ['120/1'];
      expect(pairs).toContain(`${r.prompt_tokens}/${r.output_tokens}`);
    }
    expect(() => profilesFromPairs({ bad: [[0, 3]] })).toThrow(/positive integers/);
  });
});

describe('trace format', () => {
  it('round-trips JSONL and rejects bad lines with their number', () => {
    const recs = [{ arrival_s: 0.12, task: 'xsum', prompt_tokens: 412, output_tokens: 37 }];
    expect(parseTrace(recs.map(formatTraceLine).join('\n') + '\n')).toEqual(recs);
    expect(() => parseTrace('{"arrival_s":1,"task":"a","prompt_tokens":3,"output_tokens":1}\n{"arrival_s":0}')).toThrow(/line 2/);
  });
});

describe('Rng.gamma', () => {
  it('has mean shape*scale', () => {
    const rng = new Rng(3);
    const xs = Array.from({ length: 20000 }, () => rng.gamma(0.25, 4));
    expect(meanSd(xs)[0]).toBeCloseTo(1, 1);
  });
});

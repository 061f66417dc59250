/**
 * A minimal Prometheus registry (pure): counters, gauges and histograms with label sets, rendered in the
 * text exposition format 0.0.4. No global state; the gateway owns one Registry.
 */
export type Labels = Readonly<Record<string, string>>;
type Kind = 'counter' | 'gauge' | 'histogram';

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

function formatLabels(names: readonly string[], values: readonly string[], extra = ''): string {
  const parts = names.map((n, i) => `${n}="${escapeLabelValue(values[i] ?? '')}"`);
  if (extra !== '') parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric<S> {
  protected readonly series = new Map<string, { values: string[]; state: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly kind: Kind,
  ) {
    if (!NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
    for (const l of labelNames) if (!LABEL.test(l) || l === 'le') throw new Error(`invalid label name "${l}" on ${name}`);
  }

  protected abstract fresh(): S;
  protected abstract lines(labels: string[], state: S): string[];

  protected entry(labels: Labels): S {
    const values = this.labelNames.map((n) => {
      const v = labels[n];
      if (v === undefined) throw new Error(`${this.name}: missing label "${n}"`);
      return v;
    });
    const key = JSON.stringify(values);
    let e = this.series.get(key);
    if (e === undefined) {
      e = { values, state: this.fresh() };
      this.series.set(key, e);
    }
    return e.state;
  }

  /** Drops every series whose `label` equals `value` (e.g. a task that lost its own label). */
  removeWhere(label: string, value: string): void {
    const i = this.labelNames.indexOf(label);
    if (i < 0) return;
    for (const [k, e] of this.series) if (e.values[i] === value) this.series.delete(k);
  }

  reset(): void {
    this.series.clear();
  }

  get size(): number {
    return this.series.size;
  }

  render(): string {
    const head = [`# HELP ${this.name} ${this.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${this.name} ${this.kind}`];
    const body = [...this.series.values()].flatMap((e) => this.lines(e.values, e.state));
    return [...head, ...body].join('\n');
  }
}

export class Counter extends Metric<{ v: number }> {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, 'counter');
  }

  protected fresh() {
    return { v: 0 };
  }

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new Error(`${this.name}: a counter only goes up (got ${by})`);
    this.entry(labels).v += by;
  }

  get(labels: Labels = {}): number {
    return this.series.get(JSON.stringify(this.labelNames.map((n) => labels[n] ?? '')))?.state.v ?? 0;
  }

  protected lines(values: string[], s: { v: number }): string[] {
    return [`${this.name}${formatLabels(this.labelNames, values)} ${formatValue(s.v)}`];
  }
}

export class Gauge extends Metric<{ v: number }> {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, 'gauge');
  }

  protected fresh() {
    return { v: 0 };
  }

  set(labels: Labels, v: number): void {
    this.entry(labels).v = v;
  }

  protected lines(values: string[], s: { v: number }): string[] {
    return [`${this.name}${formatLabels(this.labelNames, values)} ${formatValue(s.v)}`];
  }
}

interface HistState {
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram extends Metric<HistState> {
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, labelNames: readonly string[], bounds: readonly number[]) {
    super(name, help, labelNames, 'histogram');
    if (bounds.length === 0 || bounds.some((b, i) => i > 0 && b <= (bounds[i - 1] ?? b))) {
      throw new Error(`${name}: bucket bounds must be non-empty and strictly increasing`);
    }
    this.bounds = [...bounds];
  }

  protected fresh(): HistState {
    return { counts: new Array<number>(this.bounds.length).fill(0), sum: 0, count: 0 };
  }

  observe(labels: Labels, v: number): void {
    if (!Number.isFinite(v)) return;
    const s = this.entry(labels);
    const i = this.bounds.findIndex((b) => v <= b);
    if (i >= 0) s.counts[i] = (s.counts[i] ?? 0) + 1;
    s.sum += v;
    s.count += 1;
  }

  protected lines(values: string[], s: HistState): string[] {
    const out: string[] = [];
    let cumulative = 0;
    this.bounds.forEach((b, i) => {
      cumulative += s.counts[i] ?? 0;
      out.push(`${this.name}_bucket${formatLabels(this.labelNames, values, `le="${formatValue(b)}"`)} ${cumulative}`);
    });
    out.push(`${this.name}_bucket${formatLabels(this.labelNames, values, 'le="+Inf"')} ${s.count}`);
    out.push(`${this.name}_sum${formatLabels(this.labelNames, values)} ${formatValue(s.sum)}`);
    out.push(`${this.name}_count${formatLabels(this.labelNames, values)} ${s.count}`);
    return out;
  }
}

export type AnyMetric = Counter | Gauge | Histogram;

export class Registry {
  private readonly metrics: AnyMetric[] = [];

  register<M extends AnyMetric>(metric: M): M {
    if (this.metrics.some((m) => m.name === metric.name)) throw new Error(`metric ${metric.name} is registered twice`);
    this.metrics.push(metric);
    return metric;
  }

  /** Every metric that carries `label`, for dropping a label value everywhere. */
  withLabel(label: string): AnyMetric[] {
    return this.metrics.filter((m) => m.labelNames.includes(label));
  }

  render(): string {
    return this.metrics.map((m) => m.render()).join('\n') + '\n';
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

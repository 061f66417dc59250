/// <reference lib="dom" />
/**
 * The dashboard's browser code. It is shipped by serialising `dashboardClient` with Function.toString (see
 * page-html.ts), so it works the same from ts-jest and from dist/ with no bundler: the function must stay
 * self-contained (browser globals, its own nested helpers and type-only imports; no runtime imports or
 * module-level values). It polls the JSON API every few seconds and redraws; charts are inline SVG.
 */
import type { Overview, Series, SeriesPoint } from '../dashboard.service';
import type { ErrorRow } from '../dashboard.queries';
import type { TaskStats } from '../task-stats';
import type { JobsView } from '../task-jobs';
import type { WorkerView } from '../worker-view';

export function dashboardClient(pollMs: number): void {
  type Child = Node | string | null;
  const SVG = 'http://www.w3.org/2000/svg';
  const base = location.pathname.replace(/\/+$/, '');
  const state = { range: new URLSearchParams(location.search).get('range') ?? '1h', task: '', busy: false };

  function el(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) if (c !== null) node.append(c);
    return node;
  }
  function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }
  function byId(id: string): HTMLElement {
    const node = document.getElementById(id);
    if (node === null) throw new Error(`#${id} is missing`);
    return node;
  }
  function pct(v: number | null): string {
    return v === null ? '–' : `${(v * 100).toFixed(1)}%`;
  }
  function ms(v: number | null): string {
    if (v === null) return '–';
    return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 1 : 0)} ms`;
  }
  function num(v: number, digits = 0): string {
    return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }
  /** A 0..1 bar; with `bad` set, red below it and green at or above it, else neutral. */
  function bar(fraction: number | null, bad: number | null = 0.9): HTMLElement {
    const f = fraction === null ? 0 : Math.max(0, Math.min(1, fraction));
    const cls = fraction === null || bad === null ? 'bar' : fraction < bad ? 'bar bad' : 'bar good';
    return el('span', { class: cls }, el('span', { style: `width:${(f * 100).toFixed(1)}%` }), el('em', {}, pct(fraction)));
  }
  async function getJson<T>(path: string): Promise<T> {
    const res = await fetch(`${base}/${path}`, { headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  }
  function query(extra: Record<string, string> = {}): string {
    return new URLSearchParams({ range: state.range, ...extra }).toString();
  }

  function card(id: string, title: string, value: string, sub: string): HTMLElement {
    return el('div', { class: 'card', 'data-testid': id }, el('h3', {}, title), el('b', { class: 'value' }, value), el('small', {}, sub));
  }
  function renderCards(o: Overview, workers: readonly WorkerView[]): void {
    const a = o.overall;
    const waiting = workers.reduce((s, w) => s + w.waiting, 0);
    byId('cards').replaceChildren(
      card('overall-slo', 'SLO attainment', pct(a.sloAttainment), `TTFT ${pct(a.ttftAttainment)} · TPOT ${pct(a.tpotAttainment)}`),
      card('overall-requests', 'Requests', num(a.requests), `${num(a.requestsPerS, 2)} req/s · ${num(o.taskCount)} tasks`),
      card('overall-throughput', 'Throughput', `${num(a.tokensOutPerS, 1)} tok/s`, `${num(a.tokensOut)} output tokens`),
      card('overall-ttft', 'TTFT p50 / p90 / p99', `${ms(a.ttftMs.p50)}`, `${ms(a.ttftMs.p90)} / ${ms(a.ttftMs.p99)}`),
      card('overall-tpot', 'TPOT p50 / p90 / p99', `${ms(a.tpotMs.p50)}`, `${ms(a.tpotMs.p90)} / ${ms(a.tpotMs.p99)}`),
      card('overall-latency', 'Latency p50 / p90 / p99', `${ms(a.latencyMs.p50)}`, `${ms(a.latencyMs.p90)} / ${ms(a.latencyMs.p99)}`),
      card('overall-queue', 'Queue depth', num(a.meanQueueDepth, 2), `mean over range · ${waiting} waiting now`),
      card('overall-errors', 'Errors', num(a.errors), `${pct(a.errorRate)} of requests · ${num(a.aborted)} aborted`),
    );
    byId('defaults').textContent = `Default targets: TTFT ≤ ${ms(o.defaults.ttftMs)}, TPOT ≤ ${ms(o.defaults.tpotMs)}`;
  }

  function renderTasks(o: Overview): void {
    const rows = o.tasks.map((t: TaskStats) =>
      el('tr', { 'data-task': t.task, class: t.task === state.task ? 'selected' : '' },
        el('td', { class: 'name' }, t.task),
        el('td', {}, bar(t.sloAttainment)),
        el('td', {}, pct(t.ttftAttainment)),
        el('td', {}, pct(t.tpotAttainment)),
        el('td', { class: t.targets.isDefault ? 'dim' : '' }, `${ms(t.targets.ttftMs)} / ${ms(t.targets.tpotMs)}`),
        el('td', { class: 'n', 'data-col': 'requests' }, num(t.requests)),
        el('td', { class: t.errors > 0 ? 'n err' : 'n', 'data-col': 'errors' }, num(t.errors)),
        el('td', { class: 'n' }, `${ms(t.ttftMs.p50)} / ${ms(t.ttftMs.p90)} / ${ms(t.ttftMs.p99)}`),
        el('td', { class: 'n' }, `${ms(t.tpotMs.p50)} / ${ms(t.tpotMs.p90)}`),
        el('td', { class: 'n' }, num(t.tokensOutPerS, 2))));
    for (const r of rows) r.addEventListener('click', () => selectTask(r.dataset['task'] ?? ''));
    byId('tasks-body').replaceChildren(...rows);
    byId('tasks-note').textContent = o.taskCount > o.tasks.length ? `showing the ${o.tasks.length} worst of ${o.taskCount} tasks` : `${o.taskCount} tasks`;
  }

  function chart(title: string, points: readonly SeriesPoint[], value: (p: SeriesPoint) => number | null, fmt: (v: number) => string, fixedMax?: number): HTMLElement {
    const W = 360, H = 120, P = 4;
    const vals = points.map(value);
    const finite = vals.filter((v): v is number => v !== null);
    const max = fixedMax ?? Math.max(1e-9, ...finite);
    const x = (i: number) => P + (i / Math.max(1, points.length - 1)) * (W - 2 * P);
    const y = (v: number) => H - P - (v / max) * (H - 2 * P);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart' });
    root.append(svg('line', { x1: 0, x2: W, y1: H - P, y2: H - P, class: 'axis' }));
    let d = '';
    vals.forEach((v, i) => {
      if (v === null) return;
      d += `${d === '' || vals[i - 1] === null ? 'M' : 'L'}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    });
    root.append(svg('path', { d: d.trim(), class: 'line' }));
    const last = [...vals].reverse().find((v) => v !== null) ?? null;
    const head = el('h3', {}, title, el('span', {}, last === null ? '–' : fmt(last)));
    const foot = el('small', {}, `max ${finite.length === 0 ? '–' : fmt(Math.max(...finite))}`);
    return el('div', { class: 'panel chart-box' }, head, root as unknown as Node, foot);
  }
  function renderCharts(s: Series): void {
    const p = s.points;
    byId('charts-title').textContent = `${s.task ?? 'All tasks'} · one point per ${s.stepS >= 3600 ? `${s.stepS / 3600} h` : `${s.stepS / 60} min`}`;
    byId('charts').replaceChildren(
      chart('Requests / s', p, (q) => q.requestsPerS, (v) => num(v, 2)),
      chart('SLO attainment', p, (q) => q.sloAttainment, (v) => pct(v), 1),
      chart('Output tokens / s', p, (q) => q.tokensOutPerS, (v) => num(v, 1)),
      chart('Queue depth (mean)', p, (q) => q.meanQueueDepth, (v) => num(v, 2)),
      chart('Errors', p, (q) => q.errors, (v) => num(v)),
    );
  }

  function renderWorkers(workers: readonly WorkerView[]): void {
    byId('workers-body').replaceChildren(...workers.map((w) =>
      el('tr', { 'data-worker': w.addr },
        el('td', { class: 'name' }, `${w.workerId ?? '?'} (${w.addr})`),
        el('td', { class: w.ready ? 'good' : 'err' }, w.ready ? 'ready' : `down${w.lastError ? `: ${w.lastError}` : ''}`),
        el('td', { class: 'n' }, String(w.running)),
        el('td', { class: 'n' }, String(w.waiting)),
        el('td', { class: 'n' }, String(w.inFlight)),
        el('td', {}, bar(w.kvUsed, null), el('small', {}, ` ${w.kvBlocksUsed}/${w.kvBlocksTotal} blocks`)),
        el('td', { class: 'n' }, num(w.stepsPerS, 1)),
        el('td', {}, w.residentAdapters.length === 0 ? '–' : `${w.residentAdapters.length}: ${w.residentAdapters.join(', ')}`))));
    if (workers.length === 0) byId('workers-body').replaceChildren(el('tr', {}, el('td', { colspan: '8' }, 'No workers configured.')));
  }

  function renderJobs(j: JobsView): void {
    byId('jobs-message').textContent = j.message ?? '';
    byId('jobs-body').replaceChildren(...j.jobs.map((job) =>
      el('tr', {},
        el('td', { class: 'name' }, job.task),
        el('td', {}, job.status),
        el('td', {}, job.stage ?? '–'),
        el('td', {}, bar(job.fraction, null), job.layersTotal === null ? null : el('small', {}, ` layer ${job.layersDone ?? 0}/${job.layersTotal}`)),
        el('td', {}, ...job.stages.map((s) => el('div', { class: 'stage' }, `${s.stage} `, bar(s.fraction, null),
          s.layersTotal === null ? null : el('small', {}, ` layer ${s.layersDone ?? 0}/${s.layersTotal}`)))),
        el('td', { class: job.error ? 'err' : '' }, job.error ?? ''))));
  }

  function renderErrors(rows: readonly ErrorRow[]): void {
    byId('errors-body').replaceChildren(...rows.map((r) =>
      el('tr', {}, el('td', {}, new Date(r.arrival).toLocaleTimeString()), el('td', { class: 'name' }, r.task),
        el('td', {}, r.status), el('td', {}, r.error ?? ''))));
    if (rows.length === 0) byId('errors-body').replaceChildren(el('tr', {}, el('td', { colspan: '4', class: 'dim' }, 'No errors in this range.')));
  }

  async function refresh(): Promise<void> {
    if (state.busy) return;
    state.busy = true;
    try {
      const [o, s, w, j, e] = await Promise.all([
        getJson<Overview>(`api/overview?${query()}`),
        getJson<Series>(`api/series?${query(state.task === '' ? {} : { task: state.task })}`),
        getJson<{ workers: WorkerView[] }>('api/workers'),
        getJson<JobsView>('api/jobs'),
        getJson<{ errors: ErrorRow[] }>(`api/errors?${query()}`),
      ]);
      renderCards(o, w.workers);
      renderTasks(o);
      renderCharts(s);
      renderWorkers(w.workers);
      renderJobs(j);
      renderErrors(e.errors);
      byId('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
      byId('status').className = 'ok';
      document.body.dataset['loaded'] = String(Number(document.body.dataset['loaded'] ?? '0') + 1);
    } catch (err) {
      byId('status').textContent = `update failed: ${(err as Error).message}`;
      byId('status').className = 'err';
    } finally {
      state.busy = false;
    }
  }

  function selectTask(task: string): void {
    state.task = state.task === task ? '' : task;
    void refresh();
  }

  const select = byId('range') as HTMLSelectElement;
  select.value = state.range;
  select.addEventListener('change', () => {
    state.range = select.value;
    void refresh();
  });
  byId('all-tasks').addEventListener('click', () => selectTask(''));
  void refresh();
  setInterval(() => void refresh(), pollMs);
}

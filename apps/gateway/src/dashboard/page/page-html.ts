/** The dashboard page: static HTML + CSS, with the browser code from client.ts inlined (no CDN, no assets). */
import { dashboardClient } from './client';

export const POLL_MS = 5000;

const CSS = `
:root { --bg:#0f1419; --panel:#19212b; --line:#2a3644; --fg:#e6edf3; --dim:#8b98a5; --good:#3fb950; --bad:#f85149; --acc:#58a6ff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; gap:16px; align-items:center; padding:12px 20px; border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0 auto 0 0; } header select, header button { background:var(--panel); color:var(--fg); border:1px solid var(--line); padding:4px 8px; border-radius:4px; }
main { padding:16px 20px; display:grid; gap:16px; }
#status.ok { color:var(--dim); } #status.err, .err { color:var(--bad); } .good { color:var(--good); } .dim { color:var(--dim); }
#cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(190px,1fr)); gap:12px; }
.card, .panel { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.card h3, .panel h3 { margin:0 0 6px; font-size:12px; font-weight:500; color:var(--dim); text-transform:uppercase; letter-spacing:.04em; display:flex; justify-content:space-between; }
.card .value { font-size:24px; display:block; } .card small { color:var(--dim); }
#charts { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:12px; }
.chart { width:100%; height:120px; display:block; } .chart .line { fill:none; stroke:var(--acc); stroke-width:2; vector-effect:non-scaling-stroke; }
.chart .axis { stroke:var(--line); } .chart-box h3 span { color:var(--fg); text-transform:none; }
table { width:100%; border-collapse:collapse; } th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--dim); font-weight:500; font-size:12px; } td.n { text-align:right; font-variant-numeric:tabular-nums; } td.name { font-weight:600; }
tr[data-task] { cursor:pointer; } tr.selected { background:#1f2d3d; }
.bar { display:inline-block; position:relative; width:110px; height:16px; background:#0b0f14; border-radius:3px; overflow:hidden; vertical-align:middle; }
.bar > span { position:absolute; inset:0 auto 0 0; background:var(--acc); } .bar.good > span { background:var(--good); } .bar.bad > span { background:var(--bad); }
.bar em { position:relative; z-index:1; font-style:normal; font-size:11px; padding-left:4px; color:#fff; text-shadow:0 0 2px #000; }
h2 { font-size:15px; margin:0 0 8px; display:flex; gap:12px; align-items:baseline; } h2 small { color:var(--dim); font-weight:400; }
.stage { white-space:nowrap; }
`;

const BODY = `
<header>
  <h1>Inlaid · SLO dashboard</h1>
  <label>Range <select id="range">
    <option value="15m">15 min</option><option value="1h">1 hour</option><option value="6h">6 hours</option>
    <option value="24h">24 hours</option><option value="7d">7 days</option><option value="30d">30 days</option>
  </select></label>
  <button id="all-tasks" type="button">All tasks</button>
  <span id="status" class="ok">loading…</span>
</header>
<main>
  <section id="cards"></section>
  <section class="panel"><h2>Trends <small id="charts-title"></small></h2><div id="charts"></div></section>
  <section class="panel"><h2>Tasks, worst first <small id="tasks-note"></small><small id="defaults"></small></h2>
    <table><thead><tr><th>Task</th><th>SLO attainment</th><th>TTFT ok</th><th>TPOT ok</th><th>Targets TTFT / TPOT</th>
      <th>Requests</th><th>Errors</th><th>TTFT p50 / p90 / p99</th><th>TPOT p50 / p90</th><th>Tokens/s</th></tr></thead>
    <tbody id="tasks-body"></tbody></table></section>
  <section class="panel"><h2>Workers</h2>
    <table><thead><tr><th>Worker</th><th>State</th><th>Running</th><th>Waiting</th><th>In flight</th><th>KV cache in use</th>
      <th>Steps/s</th><th>Adapters resident</th></tr></thead><tbody id="workers-body"></tbody></table></section>
  <section class="panel"><h2>Task onboarding jobs <small id="jobs-message"></small></h2>
    <table><thead><tr><th>Task</th><th>Status</th><th>Stage</th><th>Progress</th><th>Per stage / layer</th><th>Error</th></tr></thead>
    <tbody id="jobs-body"></tbody></table></section>
  <section class="panel"><h2>Recent errors</h2>
    <table><thead><tr><th>Time</th><th>Task</th><th>Status</th><th>Error</th></tr></thead><tbody id="errors-body"></tbody></table></section>
</main>`;

export function dashboardHtml(pollMs = POLL_MS): string {
  const script = `(${dashboardClient.toString()})(${JSON.stringify(pollMs)});`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inlaid · SLO dashboard</title><style>${CSS}</style></head>
<body>${BODY}
<script>${script.replace(/<\/script/gi, '<\\/script')}</script>
</body></html>`;
}

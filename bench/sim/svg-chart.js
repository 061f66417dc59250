/**
 * Minimal SVG charts, no dependencies: small-multiple line charts (one panel per group, one line per series)
 * and a grouped bar chart. Pure: data in, SVG text out.
 */
'use strict';

const PALETTE = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#7f7f7f', '#17becf'];
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());

/** About `count` round tick values covering [lo, hi]. */
function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function text(x, y, s, attrs = '') {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${FONT} ${attrs}>${esc(s)}</text>`;
}

/** One panel's axes, grid and lines inside the box (x0, y0, w, h). */
function panel(p, box, scale, xLabel, yLabel, colorOf) {
  const { x0, y0, w, h } = box;
  const sx = (v) => x0 + ((v - scale.xMin) / (scale.xMax - scale.xMin || 1)) * w;
  const sy = (v) => y0 + h - ((v - scale.yMin) / (scale.yMax - scale.yMin || 1)) * h;
  const out = [`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="#fff" stroke="#999"/>`];
  for (const t of niceTicks(scale.yMin, scale.yMax)) {
    out.push(`<line x1="${x0}" x2="${x0 + w}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(text(x0 - 5, sy(t) + 4, num(t), 'font-size="11" text-anchor="end"'));
  }
  for (const t of scale.xTicks) {
    out.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${y0 + h}" y2="${y0 + h + 4}" stroke="#666"/>`);
    out.push(text(sx(t), y0 + h + 16, num(t), 'font-size="11" text-anchor="middle"'));
  }
  out.push(text(x0 + w / 2, y0 - 8, p.title, 'font-size="13" font-weight="bold" text-anchor="middle"'));
  out.push(text(x0 + w / 2, y0 + h + 32, xLabel, 'font-size="11" text-anchor="middle"'));
  out.push(text(x0 - 42, y0 + h / 2, yLabel, `font-size="11" text-anchor="middle" transform="rotate(-90 ${x0 - 42} ${y0 + h / 2})"`));
  p.series.forEach((s, i) => {
    const c = colorOf(s.name, i);
    const pts = s.points.filter(([, y]) => Number.isFinite(y));
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${c}"><title>${esc(`${s.name}: x=${x}, y=${num(y)}`)}</title></circle>`);
  });
  return out.join('\n');
}

/**
 * Small multiples: opts = { title, subtitle, xLabel, yLabel, panels: [{ title, series: [{ name, points: [[x, y]], dash? }] }],
 * cols?, yMin?, yMax?, sharedY? (default true), colors?: { [seriesName]: color } }.
 */
function linePanels(opts) {
  const cols = opts.cols ?? Math.min(opts.panels.length, 4);
  const rowsN = Math.ceil(opts.panels.length / cols);
  const pw = 260;
  const ph = 190;
  const left = 70;
  const top = opts.subtitle ? 78 : 60;
  const gapX = 80;
  const gapY = 78;
  const names = [...new Set(opts.panels.flatMap((p) => p.series.map((s) => s.name)))];
  const colorOf = (name) => opts.colors?.[name] ?? PALETTE[names.indexOf(name) % PALETTE.length];
  const width = left + cols * pw + (cols - 1) * gapX + 30;
  const legendY = top + rowsN * (ph + gapY) - 20;
  const height = legendY + 30;
  const allY = (p) => p.series.flatMap((s) => s.points.map(([, y]) => y)).filter(Number.isFinite);
  const yRange = (ys) => {
    const lo = opts.yMin ?? Math.min(0, ...ys);
    const hi = opts.yMax ?? Math.max(...ys, lo + 1e-9);
    const t = niceTicks(lo, hi);
    const step = t.length > 1 ? t[1] - t[0] : 0;
    const top = t[t.length - 1] < hi - 1e-9 ? t[t.length - 1] + step : t[t.length - 1];
    return { yMin: lo, yMax: opts.yMax ?? Math.max(hi, top) };
  };
  const shared = opts.sharedY === false ? undefined : yRange(opts.panels.flatMap(allY));
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="#fafafa"/>`,
    text(left, 24, opts.title, 'font-size="16" font-weight="bold"'),
  ];
  if (opts.subtitle) out.push(text(left, 44, opts.subtitle, 'font-size="12" fill="#555"'));
  opts.panels.forEach((p, k) => {
    const xs = [...new Set(p.series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
    const scale = { xMin: Math.min(...xs), xMax: Math.max(...xs), xTicks: xs, ...(shared ?? yRange(allY(p))) };
    const box = { x0: left + (k % cols) * (pw + gapX), y0: top + Math.floor(k / cols) * (ph + gapY), w: pw, h: ph };
    out.push(panel(p, box, scale, opts.xLabel, opts.yLabel, colorOf));
  });
  names.forEach((n, i) => {
    const x = left + i * 150;
    out.push(`<line x1="${x}" x2="${x + 24}" y1="${legendY}" y2="${legendY}" stroke="${colorOf(n)}" stroke-width="3"/>`);
    out.push(text(x + 30, legendY + 4, n, 'font-size="12"'));
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Grouped bars: opts = { title, subtitle, yLabel, groups: [{ name, bars: [{ name, value }] }], yMax?, colors? }. */
function groupedBars(opts) {
  const names = [...new Set(opts.groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const colorOf = (n) => opts.colors?.[n] ?? PALETTE[names.indexOf(n) % PALETTE.length];
  const barW = 26;
  const groupW = Math.max(names.length * barW + 40, 290);
  const left = 70;
  const top = opts.subtitle ? 78 : 60;
  const h = 260;
  const width = Math.max(left + opts.groups.length * groupW + 30, left + 3 * 230);
  const legendRows = Math.ceil(names.length / 3);
  const height = top + h + 74 + legendRows * 20;
  const yMax = opts.yMax ?? niceTicks(0, Math.max(...opts.groups.flatMap((g) => g.bars.map((b) => b.value)))).pop();
  const sy = (v) => top + h - (v / yMax) * h;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="#fafafa"/>`,
    text(left, 24, opts.title, 'font-size="16" font-weight="bold"'),
  ];
  if (opts.subtitle) out.push(text(left, 44, opts.subtitle, 'font-size="12" fill="#555"'));
  for (const t of niceTicks(0, yMax)) {
    out.push(`<line x1="${left}" x2="${width - 20}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(text(left - 5, sy(t) + 4, num(t), 'font-size="11" text-anchor="end"'));
  }
  out.push(text(left - 45, top + h / 2, opts.yLabel, `font-size="11" text-anchor="middle" transform="rotate(-90 ${left - 45} ${top + h / 2})"`));
  opts.groups.forEach((g, gi) => {
    const gx = left + (groupW - names.length * barW) / 2 + gi * groupW;
    g.bars.forEach((b) => {
      const x = gx + names.indexOf(b.name) * barW;
      out.push(`<rect x="${x}" y="${sy(b.value).toFixed(1)}" width="${barW - 4}" height="${(top + h - sy(b.value)).toFixed(1)}" fill="${colorOf(b.name)}"><title>${esc(`${b.name}: ${num(b.value)}`)}</title></rect>`);
      out.push(text(x + (barW - 4) / 2, sy(b.value) - 4, b.value.toFixed(opts.decimals ?? 2), 'font-size="9" text-anchor="middle"'));
    });
    g.name.split('\n').forEach((line, li) => out.push(text(gx + (names.length * barW) / 2, top + h + 16 + li * 14, line, 'font-size="12" text-anchor="middle"')));
  });
  out.push(`<line x1="${left}" x2="${width - 20}" y1="${top + h}" y2="${top + h}" stroke="#666"/>`);
  names.forEach((n, i) => {
    const x = left + (i % 3) * 230;
    const y = top + h + 58 + Math.floor(i / 3) * 20;
    out.push(`<rect x="${x}" y="${y - 10}" width="14" height="12" fill="${colorOf(n)}"/>`);
    out.push(text(x + 20, y, n, 'font-size="12"'));
  });
  out.push('</svg>');
  return out.join('\n');
}

module.exports = { linePanels, groupedBars, niceTicks };

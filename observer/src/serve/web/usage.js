// Tokens, cost and calls over a time window, by model, provider, process or host: stacked
// bars drawn here in SVG, and the totals per key beneath.
import { api } from './api.js';
import { clear, el, fmtCost, fmtInt, fmtTime, statusLine, svg } from './format.js';

const WINDOWS = [['1h', 3600], ['6h', 6 * 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400]];
const GROUPS = ['model', 'provider', 'process', 'host'];
const BUCKETS = 60;
const COLORS = ['#3b82f6', '#f59e0b', '#10b981', '#8b5cf6', '#ef4444', '#06b6d4', '#84cc16',
  '#ec4899', '#64748b', '#a16207'];

export async function show(view, _, params) {
  const window = params.get('window') || '24h';
  const by = params.get('by') || 'model';
  const choose = (name, options, value) => el('span', { class: 'choice' }, name, ' ',
    options.map((o) => el('a', { class: o === value ? 'active' : '',
      href: '#/usage?' + new URLSearchParams({ window, by, [name]: o }).toString() }, o)));
  view.append(el('h1', {}, 'Usage'), el('div', { class: 'controls' },
    choose('window', WINDOWS.map(([w]) => w), window), choose('by', GROUPS, by)));
  const charts = el('div', { class: 'charts' });
  view.append(charts);
  view.state = { window, by, charts, last: 0 };
  await load(view);
}

export function onSpans(view) {
  // Redrawn at most every 5 s while spans arrive.
  const now = Date.now();
  if (!view.state || now - view.state.last < 5000) return;
  load(view);
}

async function load(view) {
  const { window, by, charts } = view.state;
  view.state.last = Date.now();
  const seconds = (WINDOWS.find(([w]) => w === window) || WINDOWS[2])[1];
  const to = Date.now() * 1e6;
  const from = to - seconds * 1e9;
  const usage = await api('/api/usage', new URLSearchParams({ from: String(from), to: String(to), buckets: String(BUCKETS), by }));
  clear(charts);
  if (!usage.points.length) {
    charts.append(statusLine(`No LLM calls in the last ${window}.`));
    return;
  }
  const keys = [...new Set(usage.points.map((p) => p.key))];
  const totals = new Map(keys.map((k) => [k, { calls: 0, input: 0, output: 0, cost: 0 }]));
  for (const p of usage.points) {
    const t = totals.get(p.key);
    t.calls += p.calls; t.input += p.input_tokens; t.output += p.output_tokens; t.cost += p.cost_usd;
  }
  keys.sort((a, b) => (totals.get(b).input + totals.get(b).output) - (totals.get(a).input + totals.get(a).output));
  const color = new Map(keys.map((k, i) => [k, COLORS[i % COLORS.length]]));
  charts.append(
    chart('Tokens (in + out)', usage, keys, color, (p) => p.input_tokens + p.output_tokens, fmtInt),
    chart('Cost (USD)', usage, keys, color, (p) => p.cost_usd, fmtCost),
    chart('LLM calls', usage, keys, color, (p) => p.calls, fmtInt),
    el('table', { class: 'usage-totals' },
      el('thead', {}, el('tr', {}, el('th', {}, by), ['calls', 'tokens in', 'tokens out', 'cost'].map((c) => el('th', { class: 'num' }, c)))),
      el('tbody', {}, keys.map((k) => {
        const t = totals.get(k);
        const swatch = el('span', { class: 'swatch' });
        swatch.style.background = color.get(k);
        return el('tr', { data: { key: k } }, el('td', {}, swatch, ' ', k || '(unknown)'),
          el('td', { class: 'num', data: { field: 'calls' } }, fmtInt(t.calls)),
          el('td', { class: 'num', data: { field: 'input_tokens' } }, fmtInt(t.input)),
          el('td', { class: 'num', data: { field: 'output_tokens' } }, fmtInt(t.output)),
          el('td', { class: 'num', data: { field: 'cost' } }, fmtCost(t.cost)));
      }))));
}

// Stacked bars: one per bucket, a segment per key, `value` of each point.
function chart(title, usage, keys, color, value, format) {
  const W = 900; const H = 200; const left = 70; const bottom = 24; const top = 12;
  const buckets = Math.ceil((usage.to_ns - usage.from_ns) / usage.bucket_ns);
  const stacks = new Map();
  for (const p of usage.points) {
    if (!stacks.has(p.bucket)) stacks.set(p.bucket, []);
    stacks.get(p.bucket).push(p);
  }
  const max = Math.max(...[...stacks.values()].map((ps) => ps.reduce((s, p) => s + value(p), 0)), 0);
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  const width = (W - left) / buckets;
  const y = (v) => (max > 0 ? top + (H - bottom - top) * (1 - v / max) : H - bottom);
  for (let i = 0; i <= 4; i += 1) {
    const v = max * i / 4;
    plot.append(svg('line', { x1: left, x2: W, y1: y(v), y2: y(v), class: 'grid' }),
      svg('text', { x: left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, format(v)));
  }
  for (const [bucket, points] of stacks) {
    let base = 0;
    const at = usage.from_ns + bucket * usage.bucket_ns;
    for (const key of keys) {
      const p = points.find((q) => q.key === key);
      if (!p || value(p) <= 0) continue;
      const upper = base + value(p);
      plot.append(svg('rect', { x: left + bucket * width + 1, width: Math.max(width - 2, 1), y: y(upper),
        height: Math.max(y(base) - y(upper), 0.5), fill: color.get(key) },
      svg('title', {}, `${fmtTime(at)} · ${key || '(unknown)'}: ${format(value(p))}`)));
      base = upper;
    }
  }
  plot.append(svg('text', { x: left, y: H - 6, class: 'tick' }, fmtTime(usage.from_ns)),
    svg('text', { x: W, y: H - 6, class: 'tick', 'text-anchor': 'end' }, fmtTime(usage.to_ns)));
  return el('figure', {}, el('figcaption', {}, title), plot);
}

// The list of traces, newest first, with filters kept in the address (#/traces?provider=…)
// and pages by cursor; on the first page, new traces appear as they are written.
import { api } from './api.js';
import { clear, el, fmtCost, fmtDuration, fmtInt, fmtTime, statusLine, traceHref } from './format.js';

const WINDOWS = [['', 'any time'], ['15m', 'last 15 min'], ['1h', 'last hour'], ['6h', 'last 6 h'],
  ['24h', 'last 24 h'], ['7d', 'last 7 days'], ['custom', 'between…']];
const PAGE = 50;

// Each filter: its name in the address, and the API filter it makes.
const FILTERS = {
  provider: (v) => `gen_ai.provider.name:eq:${v}`,
  model: (v) => `model:eq:${v}`,
  process: (v) => `process.executable.name:eq:${v}`,
  container: (v) => `container.id:eq:${v}`,
  host: (v) => `host.name:eq:${v}`,
  errors: () => 'error_count:gt:0',
  min_cost: (v) => `cost_usd:ge:${v}`,
  min_tokens: (v) => `tokens:ge:${v}`,
  text: (v) => `messages:contains:${v}`,
  from: (v) => `start_time:ge:${Date.parse(v) * 1e6}`,
  to: (v) => `start_time:lt:${Date.parse(v) * 1e6}`,
};

function apiParams(params) {
  const query = new URLSearchParams();
  query.set('limit', String(PAGE));
  const window = params.get('window');
  if (window && window !== 'custom') query.set('since', window);
  for (const [name, filter] of Object.entries(FILTERS)) {
    const value = params.get(name);
    if (!value) continue;
    if ((name === 'from' || name === 'to') && (window !== 'custom' || isNaN(Date.parse(value)))) continue;
    query.append('where', filter(value));
  }
  if (params.get('before')) query.set('before', params.get('before'));
  return query;
}

export async function show(view, _, params) {
  const facets = await api('/api/facets');
  view.append(el('h1', {}, 'Traces'), filterForm(params, facets));
  const list = el('div', { class: 'list' });
  view.append(list);
  view.state = { params, list, seen: new Set() };
  await load(view);
}

async function load(view, fresh = false) {
  const { params, list, seen } = view.state;
  const body = await api('/api/traces', apiParams(params));
  clear(list);
  if (!body.traces.length) {
    list.append(statusLine(params.get('before') ? 'No older traces.' :
      'No traces match. Calls appear here as `observer capture --store` or `observer run` writes them.'));
  } else {
    list.append(table(body.traces, fresh ? seen : null));
  }
  for (const t of body.traces) seen.add(t.trace_id + ':' + t.span_count);
  list.append(pager(params, body.next));
}

// On the first page, new spans refresh the list; changed rows are marked.
export function onSpans(view) {
  if (!view.state || view.state.params.get('before') || view.state.loading) return;
  view.state.loading = true;
  load(view, true).finally(() => { view.state.loading = false; });
}

function select(name, label, options, value) {
  return el('label', {}, label, ' ',
    el('select', { name }, el('option', { value: '' }, 'all'),
      options.map((o) => el('option', { value: o, selected: o === value ? 'selected' : null }, o))));
}

function input(name, label, value, attrs = {}, labelClass = null) {
  return el('label', { class: labelClass }, label, ' ', el('input', { name, value: value || '', ...attrs }));
}

function filterForm(params, facets) {
  const window = params.get('window') || '';
  const form = el('form', { class: 'filters', onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
    location.hash = '#/traces?' + next.toString();
  } },
  el('label', {}, 'time ', el('select', { name: 'window' },
    WINDOWS.map(([v, l]) => el('option', { value: v, selected: v === window ? 'selected' : null }, l)))),
  input('from', 'from', params.get('from'), { type: 'datetime-local' }, 'custom'),
  input('to', 'to', params.get('to'), { type: 'datetime-local' }, 'custom'),
  select('provider', 'provider', facets.providers, params.get('provider')),
  select('model', 'model', facets.models, params.get('model')),
  select('process', 'process', facets.processes, params.get('process')),
  facets.containers.length ? select('container', 'container', facets.containers, params.get('container')) : null,
  select('host', 'host', facets.hosts, params.get('host')),
  el('label', {}, el('input', { type: 'checkbox', name: 'errors', value: '1',
    checked: params.get('errors') ? 'checked' : null }), ' errors only'),
  input('min_cost', 'cost ≥ $', params.get('min_cost'), { type: 'number', step: 'any', min: '0', size: 6 }),
  input('min_tokens', 'tokens ≥', params.get('min_tokens'), { type: 'number', min: '0', size: 7 }),
  input('text', 'text in messages', params.get('text'), { type: 'search', placeholder: 'words in prompts or answers' }),
  el('button', { type: 'submit' }, 'Apply'),
  el('a', { class: 'reset', href: '#/traces' }, 'reset'));
  form.classList.toggle('show-custom', window === 'custom');
  form.elements.window.addEventListener('change', () =>
    form.classList.toggle('show-custom', form.elements.window.value === 'custom'));
  return form;
}

const COLUMNS = ['started', 'trace', 'process', 'duration', 'calls', 'spans', 'tokens in', 'tokens out', 'cost', 'errors'];

function table(traces, seen) {
  return el('table', { class: 'traces' },
    el('thead', {}, el('tr', {}, COLUMNS.map((c) => el('th', { class: c === 'trace' || c === 'process' || c === 'started' ? '' : 'num' }, c)))),
    el('tbody', {}, traces.map((t) => {
      const href = traceHref(t.trace_id);
      const row = el('tr', {
        class: [t.error_count ? 'has-error' : '', seen && !seen.has(t.trace_id + ':' + t.span_count) ? 'fresh' : ''].join(' ').trim(),
        data: { traceId: t.trace_id },
        onclick: (event) => { if (event.target.tagName !== 'A') location.hash = href; },
      },
      el('td', { data: { field: 'start' } }, fmtTime(t.start_time_unix_nano)),
      el('td', {}, el('a', { href, data: { field: 'name' } }, t.root_name)),
      el('td', { data: { field: 'process' } }, t.process || ''),
      el('td', { class: 'num', data: { field: 'duration' } }, fmtDuration(t.end_time_unix_nano - t.start_time_unix_nano)),
      el('td', { class: 'num', data: { field: 'calls' } }, fmtInt(t.call_count)),
      el('td', { class: 'num', data: { field: 'spans' } }, fmtInt(t.span_count)),
      el('td', { class: 'num', data: { field: 'input_tokens' } }, fmtInt(t.input_tokens)),
      el('td', { class: 'num', data: { field: 'output_tokens' } }, fmtInt(t.output_tokens)),
      el('td', { class: 'num', data: { field: 'cost' } }, fmtCost(t.cost_usd)),
      el('td', { class: 'num', data: { field: 'errors' } }, t.error_count ? fmtInt(t.error_count) : ''));
      return row;
    })));
}

function pager(params, next) {
  const bar = el('div', { class: 'pager' });
  if (params.get('before')) {
    const first = new URLSearchParams(params);
    first.delete('before');
    bar.append(el('a', { href: '#/traces?' + first.toString() }, '« newest'));
  }
  if (next) {
    const older = new URLSearchParams(params);
    older.set('before', next);
    bar.append(el('a', { href: '#/traces?' + older.toString(), class: 'older' }, 'older »'));
  }
  return bar;
}

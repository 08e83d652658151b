// One trace as a waterfall: every span (the agent's invoke_agent root, LLM calls, tools, and
// any other kind) on one time scale, nested under its parent, with time to first chunk
// marked on streamed calls, tokens and cost per span and in all, why each call is where it
// is (the link reason), errors in red.
import { api } from './api.js';
import {
  clear, el, errorOf, fmtCost, fmtDuration, fmtInt, fmtTime, isCall, spanHref, statusLine,
} from './format.js';

export async function show(view, traceId) {
  view.state = { traceId };
  await load(view);
}

async function load(view) {
  const { traceId } = view.state;
  const body = await api('/api/traces/' + encodeURIComponent(traceId), new URLSearchParams({ content: 'false' }));
  clear(view).append(render(traceId, body.spans));
}

export function onSpans(view, spans) {
  if (spans.some((s) => s.trace_id === view.state.traceId)) load(view);
}

// Spans as trees: a span whose parent is not in the trace is a root; siblings by start.
function forest(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  const sorted = [...spans].sort((a, b) => a.start_time_unix_nano - b.start_time_unix_nano);
  for (const span of sorted) {
    const parent = span.parent_span_id;
    if (parent && ids.has(parent) && parent !== span.span_id) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(span);
    } else roots.push(span);
  }
  const rows = [];
  const visit = (span, depth) => {
    rows.push({ span, depth });
    for (const child of children.get(span.span_id) || []) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  return rows;
}

export function totals(spans) {
  const sum = (key) => spans.reduce((acc, s) => acc + (Number(s.attributes[key]) || 0), 0);
  const start = Math.min(...spans.map((s) => s.start_time_unix_nano));
  const end = Math.max(...spans.map((s) => s.end_time_unix_nano));
  return {
    start, end,
    calls: spans.filter(isCall).length,
    input: sum('gen_ai.usage.input_tokens'),
    output: sum('gen_ai.usage.output_tokens'),
    cost: sum('observer.cost.usd'),
    errors: spans.filter(errorOf).length,
  };
}

function kindOf(span) {
  const kind = span.attributes['openinference.span.kind'];
  if (kind === 'AGENT' || span.name === 'invoke_agent') return 'agent';
  if (kind === 'TOOL' || span.name.startsWith('execute_tool')) return 'tool';
  return isCall(span) ? 'llm' : 'other';
}

function render(traceId, spans) {
  const t = totals(spans);
  const total = Math.max(t.end - t.start, 1);
  const pct = (ns) => (100 * ns / total);
  const names = new Map(spans.map((s) => [s.span_id, s.name]));
  const fact = (label, value, field) => el('div', { class: 'fact' }, el('span', { class: 'label' }, label),
    el('span', { class: 'value', data: { field } }, value));
  const header = el('section', { class: 'summary' },
    el('h1', {}, 'Trace ', el('code', {}, traceId)),
    el('div', { class: 'facts' },
      fact('started', fmtTime(t.start), 'start'),
      fact('duration', fmtDuration(t.end - t.start), 'duration'),
      fact('spans', fmtInt(spans.length), 'spans'),
      fact('LLM calls', fmtInt(t.calls), 'calls'),
      fact('tokens in', fmtInt(t.input), 'input_tokens'),
      fact('tokens out', fmtInt(t.output), 'output_tokens'),
      fact('cost', fmtCost(t.cost), 'cost'),
      fact('errors', fmtInt(t.errors), 'errors')));

  const ticks = el('div', { class: 'axis' });
  for (let i = 0; i <= 4; i += 1) {
    const tick = el('span', { class: 'tick' }, fmtDuration(total * i / 4));
    tick.style.left = `${i * 25}%`;
    ticks.append(tick);
  }
  const head = el('div', { class: 'wf-row wf-head' },
    el('div', { class: 'wf-name' }, 'span'), el('div', { class: 'wf-track' }, ticks),
    el('div', { class: 'num' }, 'duration'), el('div', { class: 'num' }, 'tokens in'),
    el('div', { class: 'num' }, 'tokens out'), el('div', { class: 'num' }, 'cost'));

  const rows = forest(spans).map(({ span, depth }) => {
    const a = span.attributes;
    const kind = kindOf(span);
    const error = errorOf(span);
    const reason = a['observer.link.reason'];
    const linked = (span.links || []).map((l) => {
      const why = l.attributes && l.attributes['observer.link.reason'];
      return `${why || 'link'} → ${names.get(l.span_id) || l.span_id}`;
    });
    const bar = el('div', { class: `bar ${kind}${error ? ' error' : ''}`,
      title: `${span.name}: starts at +${fmtDuration(span.start_time_unix_nano - t.start)}, lasts ${fmtDuration(span.end_time_unix_nano - span.start_time_unix_nano)}` });
    bar.style.left = `${pct(span.start_time_unix_nano - t.start)}%`;
    bar.style.width = `${Math.max(pct(span.end_time_unix_nano - span.start_time_unix_nano), 0.3)}%`;
    const track = el('div', { class: 'wf-track' }, bar);
    const ttfc = a['gen_ai.response.time_to_first_chunk'];
    if (typeof ttfc === 'number') {
      const mark = el('div', { class: 'ttfc', title: `first chunk after ${fmtDuration(ttfc * 1e9)}`, data: { ttfc: String(ttfc) } });
      mark.style.left = `${pct(span.start_time_unix_nano - t.start + ttfc * 1e9)}%`;
      track.append(mark);
    }
    const name = el('div', { class: 'wf-name' },
      el('span', { class: `kind ${kind}` }, kind === 'llm' ? 'LLM' : kind),
      el('a', { href: spanHref(span.span_id), data: { field: 'name' } }, span.name),
      reason ? el('span', { class: 'reason', title: linked.join('\n') }, reason) : null,
      error ? el('span', { class: 'error-text' }, ` ${error}`) : null);
    name.style.paddingLeft = `${0.3 + depth * 1.2}rem`;
    return el('div', { class: `wf-row${error ? ' has-error' : ''}`, data: { spanId: span.span_id, kind } },
      name, track,
      el('div', { class: 'num', data: { field: 'duration' } }, fmtDuration(span.end_time_unix_nano - span.start_time_unix_nano)),
      el('div', { class: 'num', data: { field: 'input_tokens' } }, a['gen_ai.usage.input_tokens'] != null ? fmtInt(a['gen_ai.usage.input_tokens']) : ''),
      el('div', { class: 'num', data: { field: 'output_tokens' } }, a['gen_ai.usage.output_tokens'] != null ? fmtInt(a['gen_ai.usage.output_tokens']) : ''),
      el('div', { class: 'num', data: { field: 'cost' } }, a['observer.cost.usd'] != null ? fmtCost(a['observer.cost.usd']) : ''));
  });
  const legend = el('p', { class: 'legend muted' },
    el('span', { class: 'swatch agent' }), ' agent run ', el('span', { class: 'swatch llm' }), ' LLM call ',
    el('span', { class: 'swatch tool' }), ' tool ', el('span', { class: 'swatch other' }), ' other ',
    el('span', { class: 'swatch error' }), ' error ', el('span', { class: 'ttfc-key' }), ' first chunk');
  if (!rows.length) return el('div', {}, header, statusLine('This trace has no spans.'));
  return el('div', {}, header, legend, el('div', { class: 'waterfall' }, head, rows));
}

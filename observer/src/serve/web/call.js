// One span, for a call read as a conversation: system instructions, the messages sent, the
// answer (text, reasoning, tool calls and their results), then the request's parameters,
// usage, rate limits, where it came from, its links to the calls before and after, and every
// attribute as stored. Any other kind of span shows its facts and attributes the same way.
import { api } from './api.js';
import {
  asText, el, errorOf, fmtCost, fmtDuration, fmtInt, fmtTime, folded, spanHref, traceHref,
} from './format.js';

export async function show(view, spanId) {
  const body = await api('/api/spans/' + encodeURIComponent(spanId));
  view.append(render(body));
}

// Content attributes hold JSON (messages as the GenAI conventions shape them); an older or
// foreign store may hold them as a JSON string.
function messages(value) {
  if (typeof value === 'string') {
    try { value = JSON.parse(value); } catch { return [{ role: 'text', parts: [{ type: 'text', content: value }] }]; }
  }
  return Array.isArray(value) ? value : [];
}

function part(p) {
  switch (p.type) {
    case 'text':
      return folded(asText(p.content ?? ''));
    case 'reasoning':
      return el('div', { class: 'part reasoning' }, el('div', { class: 'part-label' }, 'reasoning'), folded(asText(p.content ?? '')));
    case 'tool_call':
      return el('div', { class: 'part tool-call' },
        el('div', { class: 'part-label' }, 'calls tool ', el('code', {}, p.name ?? '?'), p.id ? el('span', { class: 'muted' }, ` (${p.id})`) : null),
        folded(asText(p.arguments ?? {}), 'code'));
    case 'tool_call_response':
      return el('div', { class: 'part tool-result' },
        el('div', { class: 'part-label' }, 'tool result', p.id ? el('span', { class: 'muted' }, ` (${p.id})`) : null),
        folded(asText(p.response ?? ''), 'code'));
    default:
      return el('div', { class: 'part other' }, el('div', { class: 'part-label' }, p.type || 'part'), folded(asText(p), 'code'));
  }
}

function message(m, side) {
  const role = m.role || 'unknown';
  return el('div', { class: `msg ${side} role-${role.replace(/[^a-z_]/gi, '')}` },
    el('div', { class: 'role' }, role, m.name ? el('span', { class: 'muted' }, ` · ${m.name}`) : null,
      m.finish_reason ? el('span', { class: 'muted' }, ` · finished: ${m.finish_reason}`) : null),
    (m.parts || []).map(part));
}

function conversation(a) {
  const system = a['gen_ai.system_instructions'];
  const input = messages(a['gen_ai.input.messages']);
  const output = messages(a['gen_ai.output.messages']);
  if (system == null && !input.length && !output.length) return null;
  const systemParts = Array.isArray(system) ? system : system != null ? [{ type: 'text', content: asText(system) }] : [];
  return el('section', { class: 'chat' }, el('h2', {}, 'Conversation'),
    systemParts.length ? message({ role: 'system', parts: systemParts }, 'in') : null,
    input.map((m) => message(m, 'in')),
    output.length ? el('div', { class: 'answer-sep' }, 'answer') : null,
    output.map((m) => message(m, 'out')));
}

// A table of the attributes whose keys `pick` accepts, in a section titled `title`.
function facts(title, a, pick, label = (k) => k) {
  const keys = Object.keys(a).filter(pick).sort();
  if (!keys.length) return null;
  return el('section', {}, el('h2', {}, title),
    el('table', { class: 'kv' }, keys.map((k) => el('tr', {}, el('th', {}, label(k)),
      el('td', { data: { key: k } }, folded(asText(a[k]), 'value'))))));
}

const USAGE_KEYS = new Set(['gen_ai.usage.input_tokens', 'gen_ai.usage.output_tokens',
  'gen_ai.usage.cache_read.input_tokens', 'gen_ai.usage.cache_creation.input_tokens',
  'gen_ai.usage.reasoning.output_tokens', 'observer.usage.source', 'observer.cost.usd',
  'observer.cost.unknown', 'gen_ai.response.time_to_first_chunk',
  'gen_ai.response.time_per_output_chunk', 'observer.stream.chunk_count',
  'observer.stream.output_chunk_count', 'gen_ai.response.finish_reasons', 'gen_ai.response.id',
  'gen_ai.response.model']);
const ORIGIN_KEYS = /^(process\.|thread\.|container\.|host\.|server\.|network\.|url\.|http\.|observer\.tls\.)/;

function linkList(title, items) {
  if (!items.length) return null;
  return el('section', {}, el('h2', {}, title), el('ul', { class: 'links' }, items.map((l) =>
    el('li', {}, el('span', { class: 'reason' }, l.reason || 'link'), ' ',
      el('a', { href: spanHref(l.span_id) }, l.name || l.span_id),
      l.start_time_unix_nano ? el('span', { class: 'muted' }, ` at ${fmtTime(l.start_time_unix_nano)}`) : null))));
}

function render({ span, links_to: before, linked_from: after }) {
  const a = span.attributes;
  const error = errorOf(span);
  const duration = span.end_time_unix_nano - span.start_time_unix_nano;
  const requestModel = a['gen_ai.request.model'];
  const responseModel = a['gen_ai.response.model'];
  const fact = (label, value, field) => value == null || value === '' ? null :
    el('div', { class: 'fact' }, el('span', { class: 'label' }, label), el('span', { class: 'value', data: { field } }, value));
  const header = el('section', { class: 'summary' },
    el('h1', {}, span.name, ' ', el('span', { class: 'kind' }, span.kind || '')),
    el('p', {}, 'in trace ', el('a', { href: traceHref(span.trace_id) }, el('code', {}, span.trace_id)),
      span.parent_span_id ? [' under ', el('a', { href: spanHref(span.parent_span_id) }, el('code', {}, span.parent_span_id))] : null),
    el('div', { class: 'facts' },
      fact('started', fmtTime(span.start_time_unix_nano), 'start'),
      fact('duration', fmtDuration(duration), 'duration'),
      fact('provider', a['gen_ai.provider.name'], 'provider'),
      fact('model', requestModel && responseModel && requestModel !== responseModel ? `${requestModel} → ${responseModel}` : responseModel || requestModel, 'model'),
      fact('tokens in', a['gen_ai.usage.input_tokens'] != null ? fmtInt(a['gen_ai.usage.input_tokens']) : null, 'input_tokens'),
      fact('tokens out', a['gen_ai.usage.output_tokens'] != null ? fmtInt(a['gen_ai.usage.output_tokens']) : null, 'output_tokens'),
      fact('cost', a['observer.cost.usd'] != null ? fmtCost(a['observer.cost.usd']) : null, 'cost'),
      fact('first chunk', typeof a['gen_ai.response.time_to_first_chunk'] === 'number' ? fmtDuration(a['gen_ai.response.time_to_first_chunk'] * 1e9) : null, 'ttfc'),
      fact('finish', Array.isArray(a['gen_ai.response.finish_reasons']) ? a['gen_ai.response.finish_reasons'].join(', ') : null, 'finish'),
      fact('status', a['http.response.status_code'], 'status'),
      fact('link', a['observer.link.reason'], 'reason')),
    error ? el('p', { class: 'error-banner' }, `error ${error}`,
      a['observer.error.message'] ? `: ${asText(a['observer.error.message'])}` : '') : null);
  return el('div', {}, header,
    conversation(a),
    facts('Request parameters', a, (k) => k.startsWith('gen_ai.request.') || k === 'gen_ai.output.type' || k === 'gen_ai.operation.name', (k) => k.replace('gen_ai.request.', '')),
    facts('Usage and response', a, (k) => USAGE_KEYS.has(k)),
    facts('Rate limits', a, (k) => k.startsWith('observer.ratelimit.'), (k) => k.replace('observer.ratelimit.', '')),
    facts('Where it came from', a, (k) => ORIGIN_KEYS.test(k)),
    facts('Tools offered', a, (k) => k === 'gen_ai.tool.definitions'),
    linkList('Follows (links to earlier spans)', before),
    linkList('Followed by (later spans linking here)', after),
    el('details', { class: 'raw' }, el('summary', {}, `All ${Object.keys(a).length} attributes`),
      facts('Attributes', a, () => true)));
}

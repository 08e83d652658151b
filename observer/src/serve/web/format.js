// Building the page and formatting numbers. Everything shown comes from captured traffic and
// is untrusted: nodes are made with createElement and filled with text (never innerHTML), and
// links only ever point inside this page (#/...).

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  append(node, children);
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value != null) node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function setProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'href') {
      if (!String(value).startsWith('#/')) throw new Error('links stay inside the page');
      node.setAttribute('href', value);
    } else node.setAttribute(key, String(value));
  }
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function fmtInt(n) {
  if (n == null) return '—';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtCost(usd) {
  if (usd == null) return '—';
  if (usd === 0) return '$0';
  const digits = usd < 0.01 ? 6 : usd < 1 ? 4 : 2;
  return '$' + usd.toFixed(digits);
}

export function fmtDuration(ns) {
  if (ns == null) return '—';
  const ms = ns / 1e6;
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return ms.toFixed(0) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(2) + ' s';
  const m = Math.floor(s / 60);
  return `${m}m ${String(Math.round(s - m * 60)).padStart(2, '0')}s`;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

export function fmtTime(ns) {
  const d = new Date(ns / 1e6);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// A value of an attribute as text: strings as they are, anything else as JSON.
export function asText(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

// Long text folded to its first lines, with a button to unfold it.
const FOLD_CHARS = 1200;
const FOLD_LINES = 16;

export function folded(text, className = 'text') {
  const pre = el('pre', { class: className }, text);
  const lines = text.split('\n').length;
  if (text.length <= FOLD_CHARS && lines <= FOLD_LINES) return pre;
  pre.classList.add('folded');
  const toggle = el('button', {
    class: 'unfold',
    type: 'button',
    onclick: () => {
      const open = pre.classList.toggle('folded');
      toggle.textContent = open ? `show all (${fmtInt(text.length)} characters)` : 'fold';
    },
  }, `show all (${fmtInt(text.length)} characters)`);
  return el('div', { class: 'foldable' }, pre, toggle);
}

export function spanHref(spanId) {
  return '#/span/' + encodeURIComponent(spanId);
}

export function traceHref(traceId) {
  return '#/trace/' + encodeURIComponent(traceId);
}

export function isCall(span) {
  return span.kind !== 'INTERNAL' && span.attributes['gen_ai.provider.name'] != null;
}

export function errorOf(span) {
  return span.attributes['error.type'];
}

export function statusLine(message, className = 'muted') {
  return el('p', { class: className }, message);
}

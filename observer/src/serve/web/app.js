// The page's frame: routes (#/traces, #/trace/ID, #/span/ID, #/usage), the API, and the live
// feed of new spans that the page on screen may use.
import { clear, el, statusLine } from './format.js';
import * as traces from './traces.js';
import * as trace from './trace.js';
import * as call from './call.js';
import * as usage from './usage.js';

const routes = [
  [/^\/traces$/, traces],
  [/^\/trace\/([0-9a-f]+)$/, trace],
  [/^\/span\/([0-9a-f]+)$/, call],
  [/^\/usage$/, usage],
];

let current = null;

async function route() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query || '');
  const main = document.getElementById('main');
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', path.startsWith('/' + link.dataset.nav));
  }
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const view = el('div', { class: 'view' });
    clear(main).append(view);
    current = { page, view };
    try {
      await page.show(view, match[1], params);
    } catch (error) {
      view.append(statusLine(String(error.message || error), 'error-text'));
    }
    return;
  }
  location.replace('#/traces');
}

// New spans, as the server sees them written; each batch goes to the page on screen.
function live() {
  const badge = document.getElementById('live');
  const source = new EventSource('/api/live');
  source.addEventListener('ready', () => {
    badge.textContent = 'live';
    badge.className = 'live on';
  });
  source.addEventListener('spans', (event) => {
    const batch = JSON.parse(event.data);
    badge.textContent = `live · ${new Date().toLocaleTimeString()}`;
    if (current && current.page.onSpans) current.page.onSpans(current.view, batch.spans);
  });
  source.addEventListener('error', () => {
    badge.textContent = 'not live (reconnecting)';
    badge.className = 'live off';
  });
}

window.addEventListener('hashchange', route);
route();
live();

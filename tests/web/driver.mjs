// Drives Debian's chromium (headless, through playwright-core) over the pages `observer serve`
// serves, and checks what they show against the JSON API. Run by tests/tests/e2e_web.rs:
//
//   node driver.mjs PRINTED_URL SCREENSHOT_DIR
//
// Environment: PLAYWRIGHT_CORE (the package's directory), CHROMIUM (default /usr/bin/chromium),
// LIVE_COMMAND (JSON array: a command that adds spans to the store while the page is open).
// Prints one line per check passed; exits non-zero with the reason at the first failure.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [printedUrl, shots] = process.argv.slice(2);
const origin = new URL(printedUrl).origin;
const token = new URL(printedUrl).searchParams.get('token');
mkdirSync(shots, { recursive: true });

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WAIT = { timeout: 30000 };

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}
const passed = (what) => console.log(`ok ${what}`);

// Numbers as the pages print them.
const shownInt = (text) => (text.trim() === '' ? 0 : Number(text.replace(/,/g, '')));
function sameCost(text, usd) {
  if (text.trim() === '' || text === '—') return usd == null;
  const digits = (text.split('.')[1] || '').length;
  return Math.abs(Number(text.slice(1)) - usd) <= 0.5 * 10 ** -digits + 1e-12;
}
function sameDuration(text, ns) {
  let m;
  if ((m = /^([\d.]+) ms$/.exec(text))) {
    const digits = (m[1].split('.')[1] || '').length;
    return Math.abs(Number(m[1]) * 1e6 - ns) <= 0.5e6 * 10 ** -digits + 1;
  }
  if ((m = /^([\d.]+) s$/.exec(text))) return Math.abs(Number(m[1]) * 1e9 - ns) <= 0.5e7 + 1;
  if ((m = /^(\d+)m (\d+)s$/.exec(text))) return Math.abs((Number(m[1]) * 60 + Number(m[2])) * 1e9 - ns) <= 0.5e9 + 1;
  return false;
}
const sum = (spans, key) => spans.reduce((acc, s) => acc + (Number(s.attributes[key]) || 0), 0);

const userDataDir = mkdtempSync(join(tmpdir(), 'observer-web-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1280, height: 860 },
});
const problems = [];
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('dialog', (dialog) => { problems.push(`a dialog opened: ${dialog.message()}`); dialog.dismiss(); });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  const api = async (path) => {
    const response = await page.request.get(origin + path);
    check(response.ok(), `GET ${path} answered ${response.status()}`);
    return response.json();
  };
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });

  // The printed address signs the browser in, and the token leaves the address bar.
  await page.goto(printedUrl);
  await page.waitForSelector('table.traces tbody tr', WAIT);
  check(!page.url().includes('token'), `the token left the address bar (${page.url()})`);
  const cookie = (await context.cookies(origin)).find((c) => c.name.startsWith('observer_token_'));
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', 'an HttpOnly, SameSite=Strict cookie holds the token');
  passed('the printed URL signs in; the token is kept in an HttpOnly cookie');

  // The trace list shows what the API says.
  const listed = (await api('/api/traces?limit=50')).traces;
  const rows = await page.$$eval('table.traces tbody tr', (trs) => trs.map((tr) => ({
    id: tr.dataset.traceId,
    fields: Object.fromEntries([...tr.querySelectorAll('[data-field]')].map((td) => [td.dataset.field, td.textContent])),
  })));
  check(rows.length === listed.length && rows.length > 0, `${rows.length} rows for ${listed.length} traces`);
  rows.forEach((row, i) => {
    const t = listed[i];
    check(row.id === t.trace_id, `row ${i} is trace ${t.trace_id}`);
    const f = row.fields;
    check(f.name === t.root_name, `name of ${t.trace_id}`);
    check(shownInt(f.input_tokens) === t.input_tokens, `tokens in of ${t.trace_id}: ${f.input_tokens} vs ${t.input_tokens}`);
    check(shownInt(f.output_tokens) === t.output_tokens, `tokens out of ${t.trace_id}`);
    check(shownInt(f.calls) === t.call_count, `calls of ${t.trace_id}`);
    check(shownInt(f.spans) === t.span_count, `spans of ${t.trace_id}`);
    check(shownInt(f.errors) === t.error_count, `errors of ${t.trace_id}`);
    check(sameCost(f.cost, t.cost_usd), `cost of ${t.trace_id}: ${f.cost} vs ${t.cost_usd}`);
    check(sameDuration(f.duration, t.end_time_unix_nano - t.start_time_unix_nano), `duration of ${t.trace_id}: ${f.duration}`);
  });
  await shot('traces');
  passed(`trace list: ${rows.length} rows match the API (tokens, calls, spans, errors, cost, duration)`);

  // Into an agent run, one with a tool when the store has one: the waterfall matches its spans.
  const tool = (await api('/api/spans?where=name:contains:execute_tool&limit=1')).spans[0];
  const agent = tool ? listed.find((t) => t.trace_id === tool.trace_id)
    : [...listed].filter((t) => t.span_count > 1).sort((a, b) => b.span_count - a.span_count)[0];
  check(agent, 'an agent run (a trace of several spans) is listed');
  await page.click(`tr[data-trace-id="${agent.trace_id}"] a[data-field="name"]`);
  await page.waitForSelector('.waterfall .wf-row[data-span-id]', WAIT);
  const spans = (await api(`/api/traces/${agent.trace_id}?content=false`)).spans;
  const bars = await page.$$eval('.waterfall .wf-row[data-span-id]', (divs) => divs.map((div) => ({
    id: div.dataset.spanId,
    kind: div.dataset.kind,
    error: div.classList.contains('has-error'),
    ttfc: !!div.querySelector('.ttfc'),
    fields: Object.fromEntries([...div.querySelectorAll('[data-field]')].map((d) => [d.dataset.field, d.textContent])),
  })));
  check(bars.length === spans.length, `${bars.length} waterfall rows for ${spans.length} spans`);
  for (const span of spans) {
    const bar = bars.find((b) => b.id === span.span_id);
    check(bar, `span ${span.span_id} has a row`);
    const a = span.attributes;
    check(bar.fields.name === span.name, `name of span ${span.span_id}`);
    check(sameDuration(bar.fields.duration, span.end_time_unix_nano - span.start_time_unix_nano), `duration of span ${span.span_id}: ${bar.fields.duration}`);
    check(shownInt(bar.fields.input_tokens) === (a['gen_ai.usage.input_tokens'] || 0), `tokens in of span ${span.span_id}`);
    check(shownInt(bar.fields.output_tokens) === (a['gen_ai.usage.output_tokens'] || 0), `tokens out of span ${span.span_id}`);
    check(sameCost(bar.fields.cost, a['observer.cost.usd']), `cost of span ${span.span_id}`);
    check(bar.error === (a['error.type'] != null), `error mark of span ${span.span_id}`);
    check(bar.ttfc === (typeof a['gen_ai.response.time_to_first_chunk'] === 'number'), `first-chunk mark of span ${span.span_id}`);
  }
  const facts = Object.fromEntries(await page.$$eval('.summary [data-field]', (els) => els.map((e) => [e.dataset.field, e.textContent])));
  check(shownInt(facts.input_tokens) === sum(spans, 'gen_ai.usage.input_tokens'), 'trace tokens in');
  check(shownInt(facts.output_tokens) === sum(spans, 'gen_ai.usage.output_tokens'), 'trace tokens out');
  check(sameCost(facts.cost, sum(spans, 'observer.cost.usd')), 'trace cost');
  check(shownInt(facts.calls) === agent.call_count, 'trace calls');
  check(shownInt(facts.spans) === spans.length, 'trace spans');
  const kinds = new Set(bars.map((b) => b.kind));
  check(kinds.has('agent') && kinds.has('llm'), `the run shows its agent root and LLM calls (${[...kinds]})`);
  check(!tool || kinds.has('tool'), 'the run shows its tool');
  await shot('trace');
  passed(`waterfall: ${bars.length} spans (${[...kinds].join(', ')}) match the API; totals match`);

  // A streamed call marks its first chunk on the waterfall.
  const streamed = (await api('/api/spans?where=gen_ai.response.time_to_first_chunk:gt:0&limit=1')).spans[0];
  check(streamed, 'the store holds a streamed call');
  await page.evaluate((href) => { location.hash = href; }, `#/trace/${streamed.trace_id}`);
  await page.waitForSelector(`.wf-row[data-span-id="${streamed.span_id}"] .ttfc`, WAIT);
  await page.goBack();
  await page.waitForSelector('.waterfall .wf-row[data-span-id]', WAIT);
  passed('a streamed call shows its time to first chunk');

  // Into the last LLM call of the run: the conversation and the numbers of the span.
  const lastCall = bars.filter((b) => b.kind === 'llm').at(-1);
  await page.click(`.wf-row[data-span-id="${lastCall.id}"] a[data-field="name"]`);
  await page.waitForSelector('.chat .msg', WAIT);
  const detail = await api(`/api/spans/${lastCall.id}`);
  const a = detail.span.attributes;
  const callFacts = Object.fromEntries(await page.$$eval('.summary [data-field]', (els) => els.map((e) => [e.dataset.field, e.textContent])));
  check(shownInt(callFacts.input_tokens) === a['gen_ai.usage.input_tokens'], 'call tokens in');
  check(shownInt(callFacts.output_tokens) === a['gen_ai.usage.output_tokens'], 'call tokens out');
  check(sameDuration(callFacts.duration, detail.span.end_time_unix_nano - detail.span.start_time_unix_nano), 'call duration');
  const messageCount = (a['gen_ai.input.messages'] || []).length + (a['gen_ai.output.messages'] || []).length
    + (a['gen_ai.system_instructions'] ? 1 : 0);
  const shownMessages = await page.$$eval('.chat .msg', (m) => m.length);
  check(shownMessages === messageCount, `${shownMessages} messages shown for ${messageCount} in the span`);
  const follows = await page.$$eval('ul.links li a', (links) => links.map((l) => l.getAttribute('href')));
  for (const link of detail.links_to) check(follows.includes(`#/span/${link.span_id}`), `link to ${link.span_id} shown`);
  await shot('call');
  passed(`call: ${shownMessages} messages, tokens and duration match; ${detail.links_to.length} links shown`);

  // Markup in a prompt and an answer stays text.
  await page.evaluate(() => { location.hash = '#/traces?text=onerror'; });
  await page.waitForSelector('table.traces tbody tr', WAIT);
  await page.click('table.traces tbody tr a[data-field="name"]');
  await page.waitForSelector('.waterfall .wf-row[data-kind="llm"] a', WAIT);
  await page.click('.waterfall .wf-row[data-kind="llm"] a');
  await page.waitForSelector('.chat .msg', WAIT);
  const inert = await page.evaluate(() => ({
    injected: window.__injected,
    images: document.querySelectorAll('img').length,
    scripts: document.querySelectorAll('script').length,
    bold: document.querySelectorAll('b').length,
    svgs: document.querySelectorAll('svg').length,
    handlers: [...document.querySelectorAll('*')].filter((e) => [...e.attributes].some((x) => x.name.startsWith('on'))).length,
    scriptLinks: document.querySelectorAll('a[href^="javascript"]').length,
    text: document.body.innerText,
  }));
  check(inert.injected === undefined, 'no injected script ran');
  check(inert.images === 0 && inert.bold === 0 && inert.svgs === 0 && inert.scriptLinks === 0, `no element made from message text (${JSON.stringify({ ...inert, text: undefined })})`);
  check(inert.scripts === 1 && inert.handlers === 0, 'only the page\'s own script, no event-handler attributes');
  check(inert.text.includes('<img src=x onerror="window.__injected=1;alert(1)">'), 'the prompt\'s markup is shown as text');
  check(inert.text.includes('<script>window.__injected=2</script>'), 'the answer\'s markup is shown as text');
  check(inert.text.includes('</pre><svg onload="window.__injected=4">'), 'the system prompt\'s markup is shown as text');
  await shot('markup');
  passed('markup in system prompt, prompt and answer is shown as text; nothing ran');

  // Live: a capture writes spans while the list is open; they appear without a reload.
  await page.evaluate(() => { window.__sameDocument = true; location.hash = '#/traces'; });
  await page.waitForSelector('table.traces tbody tr', WAIT);
  await page.waitForSelector('#live.on', WAIT);
  const before = await page.$$eval('table.traces tbody tr', (trs) => trs.map((tr) => tr.dataset.traceId));
  const [program, ...args] = JSON.parse(process.env.LIVE_COMMAND);
  execFileSync(program, args, { stdio: 'inherit', timeout: 240000 });
  await page.waitForFunction((known) => [...document.querySelectorAll('table.traces tbody tr')]
    .some((tr) => !known.includes(tr.dataset.traceId)), before, { timeout: 60000 })
    .catch(async (error) => {
      const badge = await page.textContent('#live');
      const first = await page.$$eval('table.traces tbody tr', (trs) => trs.slice(0, 3).map((tr) => tr.dataset.traceId));
      const server = (await api('/api/traces?limit=3')).traces.map((t) => t.trace_id);
      console.log(`the server lists ${server}`);
      throw new Error(`no new trace appeared (live badge: ${badge}; first rows ${first}; before ${before.slice(0, 3)}): ${error.message}`);
    });
  check(await page.evaluate(() => window.__sameDocument === true), 'the page was not reloaded');
  const fresh = await page.$$eval('table.traces tbody tr.fresh', (trs) => trs.map((tr) => tr.dataset.traceId));
  check(fresh.some((id) => !before.includes(id)), 'the new traces are marked');
  await shot('live');
  passed(`live: ${fresh.length} new trace(s) appeared without a reload`);

  // Usage over 30 days by model: the totals are the API's.
  await page.evaluate(() => { location.hash = '#/usage?window=30d&by=model'; });
  await page.waitForSelector('svg.chart rect', WAIT);
  await page.waitForSelector('table.usage-totals tbody tr', WAIT);
  const now = Date.now() * 1e6;
  const usage = await api(`/api/usage?from=${now - 30 * 86400e9}&to=${now + 60e9}&buckets=60&by=model`);
  const byKey = new Map();
  for (const p of usage.points) {
    const t = byKey.get(p.key) || { calls: 0, input: 0, output: 0, cost: 0 };
    t.calls += p.calls; t.input += p.input_tokens; t.output += p.output_tokens; t.cost += p.cost_usd;
    byKey.set(p.key, t);
  }
  const totals = await page.$$eval('table.usage-totals tbody tr', (trs) => trs.map((tr) => ({
    key: tr.dataset.key,
    fields: Object.fromEntries([...tr.querySelectorAll('[data-field]')].map((td) => [td.dataset.field, td.textContent])),
  })));
  check(totals.length === byKey.size, `${totals.length} models shown for ${byKey.size}`);
  for (const { key, fields } of totals) {
    const t = byKey.get(key);
    check(t && shownInt(fields.calls) === t.calls && shownInt(fields.input_tokens) === t.input
      && shownInt(fields.output_tokens) === t.output && sameCost(fields.cost, t.cost), `usage of ${key}`);
  }
  const charts = await page.$$eval('svg.chart', (svgs) => svgs.length);
  check(charts === 3, 'three charts drawn');
  await shot('usage');
  passed(`usage: ${totals.length} models, totals match the API; ${charts} charts drawn`);

  // Without the token nothing is answered; with it as a bearer the API answers.
  for (const path of ['/', '/api/traces', '/static/app.js', '/api/live']) {
    const response = await fetch(origin + path);
    check(response.status === 401, `GET ${path} without the token answers ${response.status}`);
  }
  const bearer = await fetch(origin + '/api/traces', { headers: { authorization: `Bearer ${token}` } });
  check(bearer.status === 200, 'a bearer token is let in');
  const headers = (await fetch(origin + '/', { headers: { authorization: `Bearer ${token}` } })).headers;
  check((headers.get('content-security-policy') || '').includes("script-src 'self'"), 'a strict CSP is sent');
  check(headers.get('x-content-type-options') === 'nosniff', 'nosniff is sent');
  passed('without the token: 401 everywhere; bearer tokens work; CSP and nosniff sent');

  check(problems.length === 0, `the pages ran cleanly: ${problems.join('; ')}`);
  passed('no dialog, page error or console error');
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

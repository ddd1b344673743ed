// The console's pages. Each takes { main, params, parts }, fills `main` and may return a
// function that stops its timers when the operator leaves the page.

import { api, health, withQuery } from './api.js';
import { h, append, replace, table, dl, time, code, badge, errorBox, field } from './dom.js';

const ADMIN = '/api/v1/admin';
const MASKED = /signature|hmac|token|secret|authorization/i;

function section(title, id, ...children) {
  return h('section', { 'aria-labelledby': `${id}-title`, id },
    h('h2', { id: `${id}-title` }, title), children);
}

function loading() {
  return h('p', { class: 'muted', 'aria-busy': 'true' }, 'Loading…');
}

function button(label, onClick, props = {}) {
  return h('button', { type: 'button', ...props, on: { click: onClick } }, label);
}

// Runs `work` with `btn` disabled, so a slow call is not sent twice.
async function busy(btn, work) {
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
  }
}

function shortId(id) {
  return id ? `${String(id).slice(0, 8)}…` : '—';
}

function list(items, empty = 'none') {
  if (!items || items.length === 0) return h('span', { class: 'muted' }, empty);
  return h('ul', { class: 'plain' }, items.map((item) => h('li', null, item)));
}

// ---------------------------------------------------------------- overview

// Counter samples survive page changes, so rates cover up to the last hour of this tab.
const samples = [];
const WINDOW_MS = 60 * 60 * 1000;

export function overview({ main }) {
  const rates = h('div', null, loading());
  const healthBox = h('div', null, loading());
  main.append(
    h('h1', null, 'Overview'),
    section('Webhooks per source and outcome', 'rates', rates),
    section('Health', 'health', healthBox),
  );
  async function tick() {
    try {
      const { data } = await api('GET', `${ADMIN}/stats`);
      const now = Date.now();
      samples.push({ t: now, data });
      while (samples.length > 1 && now - samples[0].t > WINDOW_MS) samples.shift();
      replace(rates, renderRates(data));
    } catch (error) {
      replace(rates, errorBox(error));
    }
    try {
      replace(healthBox, renderHealth(await health()));
    } catch (error) {
      replace(healthBox, errorBox(error));
    }
  }
  tick();
  const timer = setInterval(tick, 5000);
  return () => clearInterval(timer);
}

function counts(data) {
  const map = new Map();
  for (const row of data.webhooks_received || []) map.set(`${row.source}\u0000${row.outcome}`, row);
  return map;
}

function renderRates(data) {
  const oldest = samples[0];
  const windowMs = Date.now() - oldest.t;
  const before = counts(oldest.data);
  const rows = [...counts(data).values()].sort((a, b) =>
    a.source.localeCompare(b.source) || a.outcome.localeCompare(b.outcome));
  const minutes = windowMs / 60000;
  const windowText = minutes < 1
    ? 'Rates appear after the next refresh (every 5 s).'
    : `Over the last ${Math.round(minutes)} min this console has been watching (at most an hour).`;
  return [
    h('p', { class: 'muted' }, windowText),
    rows.length === 0
      ? h('p', null, 'No webhook received since the gateway started.')
      : table([
        { label: 'Source', cell: (r) => r.source },
        { label: 'Outcome', cell: (r) => badge(r.outcome) },
        { label: 'Since start', cell: (r) => String(r.count) },
        { label: 'In window', cell: (r) => String(r.count - (before.get(`${r.source}\u0000${r.outcome}`)?.count ?? 0)) },
        {
          label: 'Per minute',
          cell: (r) => (minutes < 1 ? '—'
            : ((r.count - (before.get(`${r.source}\u0000${r.outcome}`)?.count ?? 0)) / minutes).toFixed(1)),
        },
      ], rows, { id: 'rates-table' }),
    dl([
      ['Events published', String(data.events_published_total ?? 0)],
      ['Events dead-lettered', String(data.events_dead_lettered_total ?? 0)],
    ]),
  ];
}

function renderHealth(report) {
  const component = (name) => {
    const c = report[name] || {};
    return { name, kind: c.kind, status: c.status, error: c.error };
  };
  const outbox = report.outbox || {};
  return [
    h('p', null, 'Gateway: ', badge(report.status), ` version ${report.version ?? '?'}`),
    table([
      { label: 'Dependency', cell: (c) => c.name },
      { label: 'Kind', cell: (c) => c.kind ?? '—' },
      { label: 'Status', cell: (c) => badge(c.status) },
      { label: 'Error', cell: (c) => c.error ?? '' },
    ], ['storage', 'dedupe', 'bus'].map(component), { id: 'deps' }),
    dl([
      ['Outbox backlog', String(outbox.backlog ?? outbox.error ?? '—')],
      ['Dead-letter queue', h('a', { href: '#/failures' }, String(outbox.dlq ?? '—'))],
      ['Plugins loaded', String((report.plugins || []).length)],
      ['Last reload', `${report.reload?.last_result ?? 'none'}`],
    ]),
    h('h3', null, 'Circuit breakers'),
    (report.breakers || []).length === 0
      ? h('p', null, 'All closed: every subject publishes.')
      : table([
        { label: 'Subject', cell: (b) => b.subject },
        { label: 'State', cell: (b) => badge(b.state) },
        { label: 'Retry in', cell: (b) => (b.retry_in_seconds != null ? `${b.retry_in_seconds} s` : '—') },
      ], report.breakers),
  ];
}

// ---------------------------------------------------------------- webhooks

const FILTERS = ['source', 'status', 'tenant', 'plugin', 'plugin_version', 'since', 'until'];
const STATUSES = ['', 'accepted', 'published', 'failed', 'dead'];

function toLocalInput(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

// The filter inputs shared by the webhook list and the bulk replay.
function filterForm(id, values, submitLabel, onSubmit) {
  const inputs = {
    source: h('input', { id: `${id}-source`, name: 'source', value: values.source || '' }),
    status: h('select', { id: `${id}-status`, name: 'status' },
      STATUSES.map((s) => h('option', { value: s, selected: s === (values.status || '') }, s || 'any'))),
    tenant: h('input', { id: `${id}-tenant`, name: 'tenant', value: values.tenant || '' }),
    plugin: h('input', { id: `${id}-plugin`, name: 'plugin', value: values.plugin || '' }),
    plugin_version: h('input', { id: `${id}-plugin_version`, name: 'plugin_version', value: values.plugin_version || '' }),
    since: h('input', { id: `${id}-since`, name: 'since', type: 'datetime-local', value: toLocalInput(values.since) }),
    until: h('input', { id: `${id}-until`, name: 'until', type: 'datetime-local', value: toLocalInput(values.until) }),
  };
  const labels = {
    source: 'Source', status: 'Status', tenant: 'Tenant', plugin: 'Plugin',
    plugin_version: 'Plugin version', since: 'Received since', until: 'Received until',
  };
  const form = h('form', { id, class: 'filters' },
    FILTERS.map((key) => field(labels[key], inputs[key])),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, submitLabel)));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = {};
    for (const key of FILTERS) {
      let value = inputs[key].value.trim();
      if (value && (key === 'since' || key === 'until')) value = new Date(value).toISOString();
      if (value) chosen[key] = value;
    }
    onSubmit(chosen);
  });
  return form;
}

export function webhooks({ main, params }) {
  const values = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
  const results = h('div', { id: 'webhook-results' }, loading());
  main.append(
    h('h1', null, 'Webhooks'),
    filterForm('webhook-filters', values, 'Filter', (chosen) => {
      location.hash = withQuery('#/webhooks', chosen);
    }),
    results,
  );
  const query = { ...values, cursor: params.get('cursor') || '' };
  api('GET', `${ADMIN}/webhooks`, { query }).then(({ data }) => {
    const rows = data.items || [];
    const filtered = Object.fromEntries(FILTERS.filter((k) => values[k]).map((k) => [k, values[k]]));
    replace(results,
      rows.length === 0 ? h('p', null, 'No webhook matches.')
        : table([
          { label: 'Received', cell: (w) => time(w.received_at) },
          { label: 'Webhook', cell: (w) => h('a', { href: `#/webhooks/${encodeURIComponent(w.id)}`, 'data-id': w.id, 'aria-label': `webhook ${w.id}` }, code(shortId(w.id))) },
          { label: 'Source', cell: (w) => w.source },
          { label: 'Topic', cell: (w) => w.topic ?? '—' },
          { label: 'Tenant', cell: (w) => w.tenant ?? '—' },
          { label: 'Status', cell: (w) => badge(w.status) },
          { label: 'Attempts', cell: (w) => String(w.attempts) },
          { label: 'Last error', cell: (w) => w.last_error ?? '' },
        ], rows, { id: 'webhook-table' }),
      h('nav', { class: 'pager', 'aria-label': 'Pages of webhooks' },
        params.get('cursor') ? h('a', { href: withQuery('#/webhooks', filtered) }, '« First page') : null,
        data.next_cursor ? h('a', { id: 'next-page', href: withQuery('#/webhooks', { ...filtered, cursor: data.next_cursor }) }, 'Next page »') : null));
  }).catch((error) => replace(results, errorBox(error)));
}

function hexDump(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const chunk = [...bytes.slice(i, i + 16)];
    lines.push(`${i.toString(16).padStart(8, '0')}  ${chunk.map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
  }
  return lines.join('\n');
}

function bodyView(w) {
  const pre = h('pre', { id: 'body', tabindex: '0' });
  let formatted;
  let raw;
  if (typeof w.body === 'string') {
    raw = w.body;
    try {
      formatted = JSON.stringify(JSON.parse(w.body), null, 2);
    } catch {
      formatted = w.body;
    }
  } else if (w.body_base64) {
    formatted = `(${w.body_size} bytes, not UTF-8: raw bytes on demand)`;
    raw = hexDump(w.body_base64);
  } else {
    formatted = '(empty)';
    raw = '';
  }
  let showingRaw = false;
  pre.textContent = formatted;
  const toggle = button('Show raw body', () => {
    showingRaw = !showingRaw;
    pre.textContent = showingRaw ? raw : formatted;
    toggle.textContent = showingRaw ? 'Show formatted body' : 'Show raw body';
    toggle.setAttribute('aria-pressed', String(showingRaw));
  }, { id: 'raw-toggle', 'aria-pressed': 'false', 'aria-controls': 'body' });
  return [h('div', { class: 'actions' }, toggle), pre];
}

function headersView(w) {
  if (w.headers_error) return errorBox(new Error(`Headers unreadable: ${w.headers_error}`));
  return table([
    { label: 'Name', cell: ([name]) => name },
    {
      label: 'Value',
      cell: ([name, value]) => (MASKED.test(name)
        ? h('span', { class: 'masked', title: 'masked: a signature or credential' }, '•••••••• (masked)')
        : value),
    },
  ], w.headers || [], { id: 'headers' });
}

function eventsView(events) {
  if (!events || events.length === 0) return h('p', null, 'No events.');
  return table([
    { label: 'Event', cell: (e) => code(e.id) },
    { label: 'Subject', cell: (e) => e.subject },
    { label: 'Status', cell: (e) => badge(e.status) },
    { label: 'Attempts', cell: (e) => String(e.attempts) },
    { label: 'Published', cell: (e) => time(e.published_at) },
    { label: 'Last error', cell: (e) => e.last_error ?? '' },
    {
      label: 'Envelope',
      cell: (e) => h('details', null, h('summary', null, 'CloudEvent'),
        h('pre', null, e.envelope ? JSON.stringify(e.envelope, null, 2) : (e.envelope_error ?? ''))),
    },
  ], events, { id: 'events' });
}

function pluginText(p) {
  return p ? `${p.name} ${p.version}` : '—';
}

function replaysView(replays) {
  if (!replays || replays.length === 0) return h('p', { id: 'replays-empty' }, 'Never replayed.');
  return table([
    { label: 'When', cell: (r) => time(r.requested_at) },
    { label: 'By', cell: (r) => r.requested_by },
    { label: 'Kind', cell: (r) => r.kind },
    { label: 'Plugin', cell: (r) => pluginText(r.plugin) },
    { label: 'Outcome', cell: (r) => badge(r.outcome) },
    { label: 'New events', cell: (r) => list((r.event_ids || []).map((id) => code(id))) },
    { label: 'Error', cell: (r) => r.error ?? '' },
    { label: 'Job', cell: (r) => (r.job_id ? code(shortId(r.job_id)) : '—') },
  ], replays, { id: 'replays' });
}

function previewView(items) {
  return table([
    { label: 'Webhook', cell: (p) => h('a', { href: `#/webhooks/${encodeURIComponent(p.webhook_id)}` }, code(shortId(p.webhook_id))) },
    { label: 'Source', cell: (p) => p.source },
    { label: 'Status now', cell: (p) => badge(p.status) },
    { label: 'Plugin', cell: (p) => pluginText(p.plugin) },
    { label: 'Would be', cell: (p) => badge(p.outcome) },
    { label: 'Events', cell: (p) => list((p.events || []).map((e) => `${e.subject} (${e.type ?? '?'})`)) },
    { label: 'Error', cell: (p) => p.error ?? '' },
  ], items, { class: 'preview' });
}

export function webhook({ main, parts }) {
  const id = parts[1];
  const content = h('div', null, loading());
  main.append(h('p', null, h('a', { href: '#/webhooks' }, '« Webhooks')), h('h1', null, 'Webhook ', code(id)), content);
  const message = h('div', { id: 'replay-message', 'aria-live': 'polite' });
  const sections = {
    events: h('div'),
    replays: h('div'),
  };
  async function refresh() {
    const { data } = await api('GET', `${ADMIN}/webhooks/${encodeURIComponent(id)}`);
    replace(sections.events, eventsView(data.events));
    replace(sections.replays, replaysView(data.replays));
    return data;
  }
  const preview = button('Preview replay (dry run)', (event) => busy(event.currentTarget, async () => {
    replace(message);
    try {
      const { data } = await api('POST', `${ADMIN}/webhooks/${encodeURIComponent(id)}/replay`, { query: { dry_run: 'true' } });
      replace(message, h('p', null, 'Dry run: nothing was published.'), previewView([data.webhook]));
    } catch (error) {
      replace(message, errorBox(error));
    }
  }), { id: 'replay-preview' });
  const replay = button('Replay now', (event) => busy(event.currentTarget, async () => {
    replace(message);
    try {
      const { data } = await api('POST', `${ADMIN}/webhooks/${encodeURIComponent(id)}/replay`);
      const r = data.replay;
      replace(message, h('p', { class: 'ok', role: 'status' },
        `Replayed through ${pluginText(r.plugin)}: ${r.outcome}, ${(r.event_ids || []).length} new event(s).`));
    } catch (error) {
      replace(message, errorBox(error));
    }
    await refresh().catch((error) => append(message, errorBox(error)));
  }), { id: 'replay' });
  refresh().then((w) => {
    replace(content,
      section('Summary', 'summary', dl([
        ['Source', w.source], ['Topic', w.topic], ['Tenant', w.tenant], ['Status', badge(w.status)],
        ['Attempts', String(w.attempts)], ['Last error', w.last_error], ['Received', time(w.received_at)],
        ['Idempotency key', code(w.idempotency_key)], ['Correlation id', code(w.correlation_id)],
        ['Body size', `${w.body_size} bytes`],
      ])),
      section('Provenance', 'provenance', dl([
        ['Plugin', w.plugin], ['Version', w.plugin_version], ['SHA-256', code(w.plugin_sha256)],
      ])),
      section('Replay', 'replay-actions',
        h('p', { class: 'muted' }, 'Re-maps the stored request through the plugin serving now and publishes the new events under new ids.'),
        h('div', { class: 'actions' }, preview, replay), message),
      section('Replay history', 'history', sections.replays),
      section('Events', 'events-section', sections.events),
      section('Headers', 'headers-section', h('p', { class: 'muted' }, 'Signature and credential values are masked.'), headersView(w)),
      section('Body', 'body-section', bodyView(w)),
    );
  }).catch((error) => replace(content, errorBox(error)));
}

// ---------------------------------------------------------------- failures

const DONE = new Set(['completed', 'failed', 'interrupted']);

// Follows a replay job until it ends, showing its progress; `onDone` runs once it has.
function followJob(job, box, onDone = () => {}) {
  const bar = h('progress', { 'aria-label': 'Replay progress' });
  const text = h('p', { role: 'status', id: 'job-status' });
  replace(box, h('h3', null, 'Replay job ', code(job.id)), bar, text);
  let timer = null;
  const show = (j) => {
    const p = j.progress || {};
    text.textContent = `${j.status}: ${p.processed ?? 0} processed, ${p.replayed ?? 0} replayed, ${p.failed ?? 0} failed, ${p.events ?? 0} events${j.error ? ` — ${j.error}` : ''}`;
    if (DONE.has(j.status)) {
      bar.max = 1;
      bar.value = 1;
      box.dataset.done = j.status;
      clearInterval(timer);
      onDone();
    }
  };
  show(job);
  if (!DONE.has(job.status)) {
    timer = setInterval(async () => {
      try {
        const { data } = await api('GET', `${ADMIN}/replays/${encodeURIComponent(job.id)}`, { query: { limit: 1 } });
        show(data);
      } catch (error) {
        clearInterval(timer);
        append(box, errorBox(error));
      }
    }, 1000);
  }
  return () => clearInterval(timer);
}

export function failures({ main }) {
  const groups = h('div', { id: 'failure-groups' }, loading());
  const bulk = h('div', { id: 'bulk' });
  const jobs = h('div', { id: 'jobs' });
  const stops = [];
  main.append(
    h('h1', null, 'Failures'),
    section('Dead-letter queue and failed webhooks, by reason', 'groups', groups),
    section('Bulk replay by filter', 'bulk-replay',
      h('p', { class: 'muted' }, 'The dry run shows what the plugin serving now makes of the first matching webhooks; nothing is published until you confirm.'),
      filterForm('bulk-filters', { status: 'failed' }, 'Dry run', (chosen) => dryRun(chosen)),
      bulk),
    section('Recent replay jobs', 'recent-jobs', jobs),
  );

  async function dryRun(chosen) {
    replace(bulk, loading());
    try {
      const { data } = await api('POST', `${ADMIN}/webhooks/replay`, { query: { ...chosen, dry_run: 'true' } });
      const items = data.items || [];
      const confirm = button('Confirm replay', (event) => busy(event.currentTarget, async () => {
        try {
          const { data: started } = await api('POST', `${ADMIN}/webhooks/replay`, { query: chosen });
          const box = h('div', { id: 'job' });
          replace(bulk, box);
          stops.push(followJob(started.job, box, refreshLists));
          loadJobs();
        } catch (error) {
          append(bulk, errorBox(error));
        }
      }), { id: 'bulk-confirm' });
      replace(bulk,
        h('p', { id: 'dry-run-summary' }, items.length === 0 ? 'Dry run: no webhook matches.'
          : `Dry run: the first ${items.length} matching webhook(s)${data.next_cursor ? ' (more match)' : ''}. A replay takes every match.`),
        items.length ? previewView(items) : null,
        items.length ? h('div', { class: 'actions' }, confirm, button('Cancel', () => replace(bulk))) : null);
      if (items.length) confirm.focus();
    } catch (error) {
      replace(bulk, errorBox(error));
    }
  }

  async function replayDead(group, target) {
    const confirm = button(`Confirm: re-queue the dead events of ${group.source}`, (event) => busy(event.currentTarget, async () => {
      try {
        const { data } = await api('POST', `${ADMIN}/dlq/replay`, { query: { source: group.source } });
        const box = h('div');
        replace(target, box);
        stops.push(followJob(data.job, box, refreshLists));
        loadJobs();
      } catch (error) {
        append(target, errorBox(error));
      }
    }));
    replace(target,
      h('p', null, `Publishes every dead event of source ${group.source} again as it was, under its own id (${group.items.length} in this group).`),
      h('div', { class: 'actions' }, confirm, button('Cancel', () => replace(target))));
    confirm.focus();
  }

  async function loadGroups() {
    try {
      const { data } = await api('GET', `${ADMIN}/dlq`, { query: { limit: 500 } });
      const byReason = new Map();
      for (const item of data.items || []) {
        const key = `${item.kind}\u0000${item.source}\u0000${item.last_error ?? ''}`;
        if (!byReason.has(key)) byReason.set(key, { kind: item.kind, source: item.source, reason: item.last_error ?? '(no error recorded)', items: [] });
        byReason.get(key).items.push(item);
      }
      const rows = [...byReason.values()].sort((a, b) => b.items.length - a.items.length);
      replace(groups, rows.length === 0 ? h('p', null, 'Nothing failed: the dead-letter queue is empty.')
        : [
          data.next_cursor ? h('p', { class: 'muted' }, 'Grouping the newest 500; more are queued.') : null,
          table([
            { label: 'Kind', cell: (g) => g.kind },
            { label: 'Source', cell: (g) => g.source },
            { label: 'Reason', cell: (g) => h('span', { class: 'reason' }, g.reason) },
            { label: 'Count', cell: (g) => String(g.items.length) },
            { label: 'Newest', cell: (g) => time(g.items[0].received_at) },
            { label: 'Examples', cell: (g) => list(g.items.slice(0, 3).map((i) => h('a', { href: `#/webhooks/${encodeURIComponent(i.webhook_id)}` }, code(shortId(i.webhook_id))))) },
            {
              label: 'Replay',
              cell: (g) => {
                const target = h('div', { class: 'inline' });
                const start = g.kind === 'webhook'
                  ? button('Dry run…', () => {
                    document.getElementById('bulk-filters-source').value = g.source;
                    document.getElementById('bulk-filters-status').value = 'failed';
                    dryRun({ source: g.source, status: 'failed' });
                    document.getElementById('bulk-replay').scrollIntoView();
                  })
                  : button('Re-queue…', () => replayDead(g, target));
                return [start, target];
              },
            },
          ], rows, { id: 'groups-table' }),
        ]);
    } catch (error) {
      replace(groups, errorBox(error));
    }
  }

  async function loadJobs() {
    try {
      const { data } = await api('GET', `${ADMIN}/replays`, { query: { limit: 10 } });
      const items = data.items || [];
      replace(jobs, items.length === 0 ? h('p', null, 'No replay job yet.') : table([
        { label: 'Job', cell: (j) => code(shortId(j.id)) },
        { label: 'Kind', cell: (j) => j.kind },
        { label: 'Filter', cell: (j) => code(JSON.stringify(j.filter)) },
        { label: 'Status', cell: (j) => badge(j.status) },
        { label: 'Progress', cell: (j) => `${j.progress.processed} processed, ${j.progress.replayed} replayed, ${j.progress.failed} failed` },
        { label: 'Started', cell: (j) => time(j.created_at) },
      ], items));
    } catch (error) {
      replace(jobs, errorBox(error));
    }
  }
  function refreshLists() {
    loadGroups();
    loadJobs();
  }
  refreshLists();
  return () => stops.forEach((stop) => stop());
}

// ---------------------------------------------------------------- plugins

function versionText(p) {
  return `${p.name} ${p.version}`;
}

function reloadOutcome(outcome) {
  const plugins = outcome.plugins || {};
  const sources = outcome.sources || {};
  const diff = (label, items) => [h('dt', null, label), h('dd', null, list(items))];
  return h('div', { id: 'reload-result', class: `card outcome-${outcome.result}` },
    h('p', null, 'Result: ', badge(outcome.result), outcome.dry_run ? ' (dry run: nothing was swapped)' : ''),
    h('dl', { class: 'diff' },
      diff('Plugins added', (plugins.added || []).map((p) => [versionText(p), ' ', code(p.sha256)])),
      diff('Plugins replaced', (plugins.replaced || []).map((c) => `${c.name}: ${c.from.version} → ${c.to.version} (${c.to.sha256.slice(0, 12)}…)`)),
      diff('Plugins removed', (plugins.removed || []).map(versionText)),
      diff('Plugins unchanged', (plugins.unchanged || []).map(versionText)),
      diff('Sources added', sources.added),
      diff('Sources replaced', sources.replaced),
      diff('Sources removed', sources.removed),
      diff('Sources unchanged', sources.unchanged),
      diff('Fixtures', (outcome.fixtures || []).map((f) => `${f.plugin} ${f.version}: ${f.passed} passed, ${f.failed} failed (${f.fixtures})`)),
      diff('Rejected', (outcome.rejected || []).map((r) => `${r.what}: ${r.reason}`)),
      diff('Restart required for', outcome.restart_required)));
}

export function plugins({ main }) {
  const content = h('div', null, loading());
  const result = h('div', { id: 'reload-box', 'aria-live': 'polite' });
  const check = button('Check reload (dry run)', (event) => busy(event.currentTarget, async () => {
    replace(result, loading());
    try {
      const { data } = await api('POST', `${ADMIN}/reload`, { query: { dry_run: 'true' }, accept: [422] });
      const apply = button('Apply reload', (e) => busy(e.currentTarget, async () => {
        try {
          const { data: applied } = await api('POST', `${ADMIN}/reload`, { accept: [422] });
          replace(result, h('h3', null, 'Reload'), reloadOutcome(applied));
          load();
        } catch (error) {
          replace(result, errorBox(error));
        }
      }), { id: 'reload-apply' });
      replace(result, h('h3', null, 'What a reload would change'), reloadOutcome(data),
        data.result === 'validated' ? h('div', { class: 'actions' }, apply) : null);
    } catch (error) {
      replace(result, errorBox(error));
    }
  }), { id: 'reload-dry-run' });
  main.append(h('h1', null, 'Plugins'),
    section('Reload', 'reload',
      h('p', { class: 'muted' }, 'Reads the config and plugin directory again; the dry run shows the difference before anything is swapped.'),
      h('div', { class: 'actions' }, check), result),
    content);
  async function load() {
    try {
      const [{ data }, { data: src }] = await Promise.all([
        api('GET', `${ADMIN}/plugins`), api('GET', `${ADMIN}/sources`)]);
      const last = data.last_reload;
      replace(content,
        section('Loaded plugins', 'loaded', table([
          { label: 'Plugin', cell: (p) => p.name },
          { label: 'Version', cell: (p) => p.version },
          { label: 'SHA-256', cell: (p) => code(p.sha256) },
          { label: 'Contract', cell: (p) => p.contract ?? '—' },
          { label: 'Origin', cell: (p) => p.origin },
          { label: 'Sources', cell: (p) => list(p.sources) },
        ], data.plugins || [], { id: 'plugins-table' })),
        (data.load_errors || []).length ? section('Load errors', 'load-errors', table([
          { label: 'File', cell: (e) => e.origin }, { label: 'Error', cell: (e) => e.error },
        ], data.load_errors)) : null,
        section('Sources', 'sources', table([
          { label: 'Source', cell: (s) => s.name },
          { label: 'Plugin build', cell: (s) => [versionText(s.plugin), ' ', code(s.plugin.sha256.slice(0, 12))] },
          { label: 'Secrets', cell: (s) => String(s.secrets.length) },
          { label: 'Dedupe TTL', cell: (s) => `${s.dedupe_ttl_seconds} s` },
        ], src.sources || [])),
        section('Last reload', 'last-reload', last ? [
          dl([['Result', badge(last.result)], ['Trigger', last.trigger], ['At', time(last.at)],
            ['Took', `${last.duration_ms} ms`], ['Last success', time(data.last_reload_success_at)]]),
          h('h3', null, 'Fixtures'),
          (last.fixtures || []).length ? table([
            { label: 'Plugin', cell: (f) => `${f.plugin} ${f.version}` },
            { label: 'Fixtures', cell: (f) => f.fixtures },
            { label: 'Passed', cell: (f) => String(f.passed) },
            { label: 'Failed', cell: (f) => String(f.failed) },
          ], last.fixtures) : h('p', null, 'No new or changed plugin was checked in that reload.'),
        ] : h('p', null, 'No reload since the gateway started.')),
        section('Rejected candidates', 'rejected', (data.rejected || []).length ? table([
          { label: 'What', cell: (r) => r.what }, { label: 'Why', cell: (r) => r.reason },
        ], data.rejected) : h('p', null, 'None: the last reload attempt was accepted.')),
      );
    } catch (error) {
      replace(content, errorBox(error));
    }
  }
  load();
}

// ---------------------------------------------------------------- secrets

export function secrets({ main }) {
  const configured = h('div', null, loading());
  const tenants = h('div', { id: 'tenant-secrets' }, loading());
  const message = h('div', { id: 'secret-message', 'aria-live': 'polite' });
  const source = h('input', { id: 'secret-source', name: 'source', list: 'source-names', required: true });
  const tenant = h('input', { id: 'secret-tenant', name: 'tenant', required: true });
  const value = h('input', { id: 'secret-value', name: 'secret', type: 'password', autocomplete: 'off', required: true });
  const names = h('datalist', { id: 'source-names' });
  const form = h('form', { id: 'secret-form', class: 'filters' },
    field('Source', source), field('Tenant', tenant), field('New secret', value), names,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Add secret')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = form.querySelector('button[type=submit]');
    await busy(submit, async () => {
      try {
        const { data } = await api('POST', `${ADMIN}/secrets`, {
          body: { source: source.value.trim(), tenant: tenant.value.trim(), secrets: [value.value] },
        });
        value.value = '';
        replace(message, h('p', { class: 'ok', role: 'status' },
          `Added to ${data.source} / ${data.tenant}: fingerprint ${data.added.map((a) => a.fingerprint).join(', ')}.`));
        loadTenants();
      } catch (error) {
        replace(message, errorBox(error));
      }
    });
  });
  main.append(h('h1', null, 'Secrets'),
    h('p', { class: 'muted' }, 'Secrets show by fingerprint only; their values never leave the gateway. Rotate = add the new secret, move the sender to it, and remove the old one once it stops matching.'),
    section('Tenant secrets', 'tenants', tenants),
    section('Add or rotate a tenant secret', 'add-secret', form, message),
    section('Source secrets (from the config file)', 'configured', configured));

  function removeButton(s, cell) {
    return button('Remove', () => {
      const yes = button('Confirm remove', (event) => busy(event.currentTarget, async () => {
        try {
          await api('DELETE', `${ADMIN}/secrets/${encodeURIComponent(s.source)}/${encodeURIComponent(s.tenant)}/${encodeURIComponent(s.id)}`);
          replace(message, h('p', { class: 'ok', role: 'status' }, `Removed ${s.fingerprint} from ${s.source} / ${s.tenant}.`));
          loadTenants();
        } catch (error) {
          replace(message, errorBox(error));
        }
      }), { class: 'danger', 'data-fingerprint': s.fingerprint });
      replace(cell, h('span', null, `Remove ${s.fingerprint}? `), yes, button('Cancel', () => replace(cell, removeButton(s, cell))));
      yes.focus();
    }, { 'data-fingerprint': s.fingerprint, 'aria-label': `Remove secret ${s.fingerprint}` });
  }

  async function loadTenants() {
    try {
      const { data } = await api('GET', `${ADMIN}/secrets`);
      const rows = (data.secrets || []).sort((a, b) =>
        a.source.localeCompare(b.source) || a.tenant.localeCompare(b.tenant) || a.created_at.localeCompare(b.created_at));
      replace(tenants, rows.length === 0 ? h('p', null, 'No tenant secret stored.') : table([
        { label: 'Source', cell: (s) => s.source },
        { label: 'Tenant', cell: (s) => s.tenant },
        { label: 'Fingerprint', cell: (s) => code(s.fingerprint) },
        { label: 'Added', cell: (s) => time(s.created_at) },
        { label: 'Matches', cell: (s) => String(s.matches) },
        { label: 'Last matched', cell: (s) => (s.last_matched_at ? time(s.last_matched_at) : 'never') },
        {
          label: 'Actions',
          cell: (s) => {
            const cell = h('span', { class: 'inline' });
            const rotate = button('Rotate', () => {
              source.value = s.source;
              tenant.value = s.tenant;
              value.focus();
            }, { 'aria-label': `Rotate the secrets of ${s.tenant}` });
            append(cell, removeButton(s, cell));
            return [rotate, ' ', cell];
          },
        },
      ], rows, { id: 'tenant-table' }));
    } catch (error) {
      replace(tenants, errorBox(error));
    }
  }

  api('GET', `${ADMIN}/sources`).then(({ data }) => {
    const list_ = data.sources || [];
    replace(names, list_.map((s) => h('option', { value: s.name })));
    const rows = list_.flatMap((s) => (s.secrets.length ? s.secrets.map((x) => ({ source: s.name, ...x })) : []));
    replace(configured, rows.length === 0 ? h('p', null, 'No source has secrets in the config file.') : table([
      { label: 'Source', cell: (r) => r.source },
      { label: 'Fingerprint', cell: (r) => code(r.id) },
      { label: 'Matches', cell: (r) => String(r.matches) },
      { label: 'Last matched', cell: (r) => (r.last_matched_at ? time(r.last_matched_at) : 'never') },
    ], rows, { id: 'configured-table' }));
  }).catch((error) => replace(configured, errorBox(error)));
  loadTenants();
}

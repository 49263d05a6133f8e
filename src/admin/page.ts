/**
 * The status page: one self-contained HTML document (inline CSS and JS, no
 * CDN, works offline). Data reaches it only as JSON (embedded with
 * `jsonForHtml`, then over SSE) and is rendered with `textContent`, never
 * `innerHTML`, so a hostile name or CA error message stays text. The server
 * sends text fields as bounded strings (`view.ts`); the script still turns
 * every value it shows into text itself (`txt`), and guards each row, so one
 * odd value cannot throw in the DOM and blank the page.
 */
import { LIFECYCLE_STATES } from '../types.js';
import { escapeHtml, jsonForHtml } from './escape.js';

/** What the page needs to know besides the data. */
export interface PageConfig {
  /** Absolute paths of the endpoints. */
  paths: { events: string; status: string; renew: string; metrics: string };
  /** Compound parent of each state key that has one (`renewing` → `attempting`), for highlighting. */
  parents: Record<string, string>;
  /** Page title. */
  title: string;
  /** Names listed at most (the rest are counted, and reachable through `status.json?after=`); default: no bound. */
  pageSize?: number;
}

/** Render the page. `svg` is the statechart (trusted: built by `toSvg`); `initial` the first snapshot. */
export function renderPage(options: { config: PageConfig; initial: unknown; svg: string; nonce: string }): string {
  const { config, initial, svg, nonce } = options;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>${escapeHtml(config.title)}</title>
<style nonce="${nonce}">${CSS}</style>
</head>
<body>
<header>
  <h1>${escapeHtml(config.title)}</h1>
  <span id="summary" aria-live="polite"></span>
  <span id="conn" class="conn">connecting…</span>
</header>
<main>
  <section id="list">
    <table id="names">
      <thead><tr><th>Name</th><th>State</th><th>Issuer</th><th>Not after</th><th>Renew at</th><th>Attempts</th><th>Next attempt</th><th>Last error</th><th>Action</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="empty" hidden>No names yet.</p>
    <p id="flash" role="status" aria-live="polite"></p>
  </section>
  <aside id="detail" aria-label="Selected name">
    <h2 id="detail-name">—</h2>
    <p id="detail-state"></p>
    <div id="chart">${svg}</div>
    <h3>Recent transitions</h3>
    <ol id="history" reversed></ol>
    <p class="links"><a id="metrics-link" href="${escapeHtml(config.paths.metrics)}">metrics</a> · <a id="status-link" href="${escapeHtml(config.paths.status)}">status.json</a></p>
  </aside>
</main>
<script type="application/json" id="certstate-config">${jsonForHtml(config)}</script>
<script type="application/json" id="certstate-initial">${jsonForHtml(initial)}</script>
<script nonce="${nonce}">${CLIENT_JS}</script>
</body>
</html>
`;
}

const CSS = `
:root{--fg:#1f2937;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--ok:#166534;--okbg:#dcfce7;--warn:#92400e;--warnbg:#fef3c7;--bad:#991b1b;--badbg:#fee2e2;--info:#1e40af;--infobg:#dbeafe}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:16px;align-items:center;padding:10px 18px;background:#fff;border-bottom:1px solid var(--line)}
h1{font-size:18px;margin:0}
h2{font-size:16px;margin:0 0 4px;word-break:break-all}
h3{font-size:14px;margin:14px 0 6px}
.conn{margin-left:auto;font-size:12px;color:var(--muted)}
.conn.live{color:var(--ok)}
main{display:grid;grid-template-columns:minmax(0,1fr) 560px;gap:16px;padding:16px}
@media (max-width:1300px){main{grid-template-columns:1fr}}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f1f5f9}
tbody tr{cursor:pointer}
tbody tr:hover{background:#f8fafc}
tbody tr.selected{background:#eef2ff}
td.name{font-weight:600;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.st-valid{color:var(--ok);background:var(--okbg)}
.st-renewing,.st-obtaining,.st-loading{color:var(--info);background:var(--infobg)}
.st-expired-renewing,.st-failed-backoff,.st-storage-unreadable,.st-paused{color:var(--bad);background:var(--badbg)}
.st-stopped{color:var(--muted);background:var(--line)}
.err-type{font-weight:600;color:var(--bad)}
.err-msg{white-space:pre-wrap;word-break:break-word}
.err-detail{color:var(--warn);white-space:pre-wrap;word-break:break-word}
.sub{color:var(--muted);font-size:12px}
button{font:inherit;font-size:12px;padding:3px 10px;border-radius:6px;border:1px solid #94a3b8;background:#fff;cursor:pointer;white-space:nowrap}
button:disabled{opacity:.5;cursor:default}
button.retry{border-color:#b91c1c;color:#b91c1c}
aside{background:#fff;border:1px solid var(--line);padding:12px;align-self:start}
#chart svg{width:100%;height:auto}
#history{padding-left:22px;margin:0;font-size:13px}
#history li{margin:2px 0}
#flash{min-height:1.4em;color:var(--muted)}
.links{font-size:12px}
`;

/**
 * The page script. Plain ES2020 in a string (not a serialised function: a
 * bundler's helpers would leak into `Function.prototype.toString()`).
 */
const CLIENT_JS = `
'use strict';
(function () {
  var config = JSON.parse(document.getElementById('certstate-config').textContent);
  var initial = JSON.parse(document.getElementById('certstate-initial').textContent);
  var token = new URLSearchParams(location.search).get('token');
  var names = new Map();
  // Counts over every name and the next page's cursor, from the server (a page lists up to config.pageSize names).
  var total = null, serverCounts = null, next = null;
  var limit = typeof config.pageSize === 'number' ? config.pageSize : Infinity;
  var skew = 0;
  var selected = null;
  var tbody = document.querySelector('#names tbody');
  var STATES = ${JSON.stringify(LIFECYCLE_STATES)};

  function txt(v) {
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    try { return typeof v === 'object' ? JSON.stringify(v) : String(v); } catch (e) { return '?'; }
  }
  function isTime(t) { return typeof t === 'number' && isFinite(t) && Math.abs(t) <= 8.64e15; }
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, txt(attrs[k]));
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === undefined || c === null || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(txt(c)));
    }
    return node;
  }
  function now() { return Date.now() + skew; }
  function iso(t) { return isTime(t) ? new Date(t).toISOString().replace('T', ' ').replace(/:\\d\\d\\.\\d+Z$/, ' UTC') : ''; }
  function rel(t) {
    if (!isTime(t)) return '';
    var d = t - now(), a = Math.abs(d), s = Math.round(a / 1000);
    var txt = s < 60 ? s + 's' : s < 3600 ? Math.round(s / 60) + 'm' : s < 172800 ? Math.round(s / 3600) + 'h' : Math.round(s / 86400) + 'd';
    return d >= 0 ? 'in ' + txt : txt + ' ago';
  }
  function when(t) {
    if (!isTime(t)) return el('span', { class: 'sub' }, '—');
    return el('span', { title: iso(t), 'data-time': t }, rel(t));
  }
  function badge(state) { state = txt(state); return el('span', { class: 'badge st-' + state, 'data-state': state }, state); }
  function errorView(e) {
    if (!e || typeof e !== 'object') return el('span', { class: 'sub' }, '—');
    return el('div', { class: 'err' },
      el('span', { class: 'err-type' }, e.type), ': ', el('span', { class: 'err-msg' }, e.message),
      e.detail ? el('div', { class: 'err-detail' }, 'CA: ' + txt(e.detail)) : null,
      e.code || e.problemType ? el('div', { class: 'sub' }, [txt(e.code), txt(e.problemType)].filter(Boolean).join(' · ')) : null);
  }
  // A certificate of several names: its other names under its first.
  function alsoNames(view) {
    if (!Array.isArray(view.names) || view.names.length < 2) return null;
    return el('div', { class: 'sub also-names' }, 'with ' + view.names.slice(1).map(txt).join(', '));
  }
  function action(view) {
    var s = txt(view.state);
    var retry = s === 'failed-backoff' || s === 'storage-unreadable' || s === 'paused';
    var label = retry ? 'Retry now' : s === 'valid' ? 'Force renew' : s === 'loading' || s === 'stopped' ? 'Unavailable' : 'Attempt in flight';
    var b = el('button', { type: 'button', class: retry ? 'retry' : 'renew', 'data-action': 'renew', 'data-name': view.name }, label);
    b.disabled = !(retry || s === 'valid');
    b.addEventListener('click', function (ev) { ev.stopPropagation(); renew(view.name, b); });
    return b;
  }
  function row(view) {
    var cert = view.certificate && typeof view.certificate === 'object' ? view.certificate : null;
    var tr = el('tr', { 'data-name': view.name, 'data-state': view.state },
      el('td', { class: 'name' }, view.name, view.managed ? null : el('div', { class: 'sub' }, 'on demand'), alsoNames(view)),
      el('td', { class: 'state' }, badge(view.state)),
      el('td', { class: 'issuer', title: cert ? cert.issuer : '' }, cert ? cert.issuerId : '—'),
      el('td', { class: 'not-after' }, cert ? when(cert.notAfter) : when(null)),
      el('td', { class: 'renew-at' }, when(view.renewAt)),
      el('td', { class: 'attempts' }, txt(view.attempts)),
      el('td', { class: 'next-attempt' }, when(view.nextAttemptAt)),
      el('td', { class: 'last-error' }, errorView(view.lastError)),
      el('td', { class: 'action' }, action(view)));
    tr.addEventListener('click', function () { select(view.name); });
    if (view.name === selected) tr.classList.add('selected');
    return tr;
  }
  function upsert(view) {
    if (!view || typeof view !== 'object') return;
    view.name = txt(view.name);
    var fresh;
    try { fresh = row(view); } catch (e) {
      // Never a blank table: the row says what it could not show.
      console.error('certstate: cannot render ' + view.name + ': ' + txt(e && e.message));
      fresh = el('tr', { 'data-name': view.name }, el('td', { class: 'name' }, view.name), el('td', { colspan: 8, class: 'sub' }, 'status not renderable'));
    }
    names.set(view.name, view);
    var old = tbody.querySelector('tr[data-name="' + CSS.escape(view.name) + '"]');
    if (old) { tbody.replaceChild(fresh, old); return; }
    var after = null;
    tbody.querySelectorAll('tr').forEach(function (tr) { if (!after && tr.getAttribute('data-name') > view.name) after = tr; });
    tbody.insertBefore(fresh, after);
  }
  function remove(name) {
    name = txt(name);
    names.delete(name);
    var old = tbody.querySelector('tr[data-name="' + CSS.escape(name) + '"]');
    if (old) old.remove();
  }
  function summary() {
    var counts = serverCounts;
    if (!counts) { counts = {}; names.forEach(function (v) { counts[v.state] = (counts[v.state] || 0) + 1; }); }
    var n = typeof total === 'number' ? total : names.size;
    var box = document.getElementById('summary');
    box.textContent = '';
    box.appendChild(document.createTextNode(n + (n === 1 ? ' name ' : ' names ')));
    STATES.forEach(function (s) { if (counts[s]) { box.appendChild(badge(s)); box.appendChild(document.createTextNode(' ' + txt(counts[s]) + ' ')); } });
    if (names.size < n) {
      box.appendChild(el('span', { class: 'sub', id: 'shown' }, ' (listing ' + names.size + ') '));
      if (next) box.appendChild(el('a', { id: 'more', href: config.paths.status + '?after=' + encodeURIComponent(next) + (token ? '&token=' + encodeURIComponent(token) : '') }, 'more as JSON'));
    }
    document.getElementById('empty').hidden = names.size > 0;
  }
  function highlight(state) {
    var svg = document.querySelector('#chart svg');
    if (!svg) return;
    svg.querySelectorAll('.current').forEach(function (g) { g.classList.remove('current'); g.removeAttribute('aria-current'); });
    svg.querySelectorAll('.compound.active').forEach(function (g) { g.classList.remove('active'); });
    if (!state) return;
    // The state itself (failed-backoff, with substates, is marked as a whole), and its parent (attempting).
    var g = svg.querySelector('g[data-state="' + CSS.escape(state) + '"]');
    if (g) { g.classList.add('current'); g.setAttribute('aria-current', 'true'); }
    var parent = config.parents[state];
    var c = parent && svg.querySelector('g.compound[data-state="' + CSS.escape(parent) + '"]');
    if (c) c.classList.add('active');
  }
  function detail() {
    var view = selected !== null ? names.get(selected) : undefined;
    document.getElementById('detail-name').textContent = view ? view.name : '—';
    var st = document.getElementById('detail-state');
    st.textContent = '';
    if (view) st.appendChild(badge(view.state));
    highlight(view ? view.state : null);
    var list = document.getElementById('history');
    list.textContent = '';
    var items = view && Array.isArray(view.history) ? view.history.slice().reverse() : [];
    items.forEach(function (h) {
      if (!h || typeof h !== 'object') return;
      var extra = [];
      if (h.attempt !== undefined) extra.push('attempt ' + txt(h.attempt) + (h.reason ? ' (' + txt(h.reason) + ')' : ''));
      if (h.adopted) extra.push('adopted from storage');
      if (isTime(h.notAfter)) extra.push('valid until ' + iso(h.notAfter));
      list.appendChild(el('li', { 'data-from': h.from || '', 'data-to': h.to },
        el('span', { class: 'sub', title: iso(h.at) }, iso(h.at).slice(11) + ' '),
        txt(h.from || 'start') + ' → ' + txt(h.to),
        extra.length ? el('span', { class: 'sub' }, ' · ' + extra.join(', ')) : null,
        h.error && typeof h.error === 'object' ? el('div', { class: 'err' }, el('span', { class: 'err-type' }, h.error.type), ': ', el('span', { class: 'err-msg' }, h.error.message),
          h.error.detail ? el('div', { class: 'err-detail' }, 'CA: ' + txt(h.error.detail)) : null) : null));
    });
  }
  function select(name) {
    selected = name = txt(name);
    tbody.querySelectorAll('tr.selected').forEach(function (tr) { tr.classList.remove('selected'); });
    var tr = tbody.querySelector('tr[data-name="' + CSS.escape(name) + '"]');
    if (tr) tr.classList.add('selected');
    detail();
  }
  function apply(data, full) {
    if (typeof data.now === 'number') skew = data.now - Date.now();
    if (full) { tbody.textContent = ''; names.clear(); next = typeof data.next === 'string' ? data.next : null; }
    if (data.counts && typeof data.counts === 'object') serverCounts = data.counts;
    if (typeof data.total === 'number') total = data.total;
    // Updates refresh the names listed, and add new ones only while the list has room.
    (data.names || []).forEach(function (v) { if (full || (v && (names.has(txt(v.name)) || names.size < limit))) upsert(v); });
    (data.removed || []).forEach(remove);
    if (selected === null || !names.has(selected)) selected = names.size ? Array.from(names.keys()).sort()[0] : null;
    if (selected !== null) select(selected); else detail();
    summary();
  }
  function flash(text) { document.getElementById('flash').textContent = text; }
  function renew(name, button) {
    button.disabled = true;
    var headers = { 'X-Certstate-Action': 'renew' };
    if (token) headers.Authorization = 'Bearer ' + token;
    fetch(config.paths.renew.replace('{name}', encodeURIComponent(name)), { method: 'POST', headers: headers, credentials: 'same-origin' })
      .then(function (res) { return res.json().then(function (body) { flash(res.ok ? 'Attempt started for ' + name : 'Refused: ' + (body.error || res.status)); }); })
      .catch(function (e) { flash('Request failed: ' + e.message); });
  }
  function connect() {
    var url = config.paths.events + (token ? '?token=' + encodeURIComponent(token) : '');
    var conn = document.getElementById('conn');
    var es = new EventSource(url);
    es.addEventListener('open', function () { conn.textContent = 'live'; conn.className = 'conn live'; });
    es.addEventListener('error', function () { conn.textContent = 'reconnecting…'; conn.className = 'conn'; });
    es.addEventListener('snapshot', function (ev) { apply(JSON.parse(ev.data), true); });
    es.addEventListener('update', function (ev) { apply(JSON.parse(ev.data), false); });
  }
  setInterval(function () {
    document.querySelectorAll('[data-time]').forEach(function (n) { n.textContent = rel(Number(n.getAttribute('data-time'))); });
  }, 15000);
  apply(initial, true);
  connect();
})();
`;

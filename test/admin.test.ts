/**
 * The admin surface over real HTTP on loopback, against a real engine
 * (memory storage, local CA): escaping, access control, live updates,
 * metrics that agree with status(), diagrams and the event iterator.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createAdminHandler } from '../src/admin/handler.js';
import { serveAdmin, type AdminServer } from '../src/admin/serve.js';
import { toMermaid, toSvg, lifecycleStates } from '../src/admin/diagram.js';
import { LIFECYCLE_STATES } from '../src/types.js';
import { engineEvents } from '../src/admin/event-stream.js';
import { TransitionHistory } from '../src/admin/history.js';
import { MetricsCollector, renderMetrics } from '../src/admin/metrics.js';
import { ManualClock } from '../src/clock.js';
import { PrometheusWriter } from '../src/admin/prometheus.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { ConfigError } from '../src/errors.js';
import { certificateMachine } from '../src/machines/certificate.js';
import type { LifecycleState, NameStatus } from '../src/types.js';
import { openSse, perNameIssuer, request, type NameOutcome, type PerNameIssuer } from './helpers/browser.js';
import { installTestCa } from './helpers/scripted-issuer.js';

const TOKEN = 'test-token-0123456789abcdef';
const HOSTILE = `</script><script>alert(1)</script><img src=x onerror=alert(2)>"'&\u2028`;

interface Fixture {
  engine: CertEngine;
  issuer: PerNameIssuer;
  admin: AdminServer;
  close(): Promise<void>;
}

/** An engine with one admin server, its names settled (nothing loading or obtaining unless told to hang). */
async function fixture(names: string[], outcomes: Record<string, NameOutcome> = {}, options: { token?: string } = {}): Promise<Fixture> {
  const storage = memoryStorage();
  await installTestCa(storage);
  const issuer = perNameIssuer();
  for (const [name, outcome] of Object.entries(outcomes)) issuer.outcomes.set(name, outcome);
  const engine = createCertEngine({ storage, issuers: [issuer], names, timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 } });
  // Before start(): the history then holds the start-up transitions too.
  const admin = await serveAdmin(engine, { ...options, updateIntervalMs: 10, issuerIds: [issuer.id] });
  await engine.start();
  await until(() => engine.status().every((s) => outcomes[s.name]?.kind === 'hang' || !['loading', 'obtaining'].includes(s.state)));
  return {
    engine,
    issuer,
    admin,
    async close() {
      await admin.close();
      await engine.stop();
    },
  };
}

async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The JSON embedded in a `<script type="application/json" id=…>` element. */
function embeddedJson(html: string, id: string): unknown {
  const m = new RegExp(`<script type="application/json" id="${id}">([^<]*)</script>`).exec(html);
  assert.ok(m, `page embeds #${id}`);
  return JSON.parse(m[1]!);
}

/** Parse a Prometheus exposition into `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** A fake engine (the handler only needs this much), for names the real engine would refuse. */
function fakeEngine(status: NameStatus[]) {
  return {
    status: () => status,
    on: () => () => {},
    forceRenew: async () => {
      throw new Error('not in this test');
    },
    clock: { now: () => Date.UTC(2026, 0, 1) },
  };
}

describe('status page escaping', () => {
  it('a hostile name and CA error stay data: no markup from them reaches the HTML, and the JSON round-trips', async () => {
    const hostileName = `<img src=x onerror=alert(1)>.example`;
    const status: NameStatus[] = [
      {
        name: hostileName,
        state: 'failed-backoff',
        managed: true,
        attempts: 2,
        lastError: { type: 'AcmeError<b>', message: HOSTILE, detail: `"><svg onload=alert(3)>`, code: 'urn:x</script>', at: 1 },
        nextAttemptAt: Date.UTC(2026, 0, 2),
      },
    ];
    const handler = createAdminHandler(fakeEngine(status));
    const http = await import('node:http');
    const server = http.createServer(handler).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const { port } = server.address() as import('node:net').AddressInfo;
      const page = await request(`http://127.0.0.1:${port}/`);
      assert.equal(page.status, 200);
      for (const needle of ['<img src=x', '</script><script>', '<svg onload', 'AcmeError<b>', '\u2028']) {
        assert.ok(!page.body.includes(needle), `page must not contain raw ${JSON.stringify(needle)}`);
      }
      // Exactly our three script elements: none injected.
      assert.equal(page.body.match(/<script/g)?.length, 3);
      const initial = embeddedJson(page.body, 'certstate-initial') as { names: NameStatus[] };
      assert.equal(initial.names[0]!.name, hostileName);
      assert.equal(initial.names[0]!.lastError!.message, HOSTILE);
      assert.match(String(page.headers['content-security-policy']), /script-src 'nonce-[^']+'/);
      assert.equal(page.headers['x-content-type-options'], 'nosniff');

      const json = await request(`http://127.0.0.1:${port}/status.json`);
      assert.match(String(json.headers['content-type']), /^application\/json/);
      assert.equal((JSON.parse(json.body) as { names: NameStatus[] }).names[0]!.lastError!.detail, `"><svg onload=alert(3)>`);

      const svg = await request(`http://127.0.0.1:${port}/diagram.svg?state=${encodeURIComponent('<script>')}`);
      assert.ok(!svg.body.includes('<script'), 'diagram escapes its input');
    } finally {
      handler.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('a real engine with a CA error full of markup: the error reaches status.json intact and the page raw HTML never holds it unescaped', async () => {
    const f = await fixture(['bad.example'], { 'bad.example': { kind: 'fail', message: HOSTILE, detail: '<b>detail</b>' } });
    try {
      assert.equal(f.engine.status()[0]!.state, 'failed-backoff');
      const page = await request(f.admin.url);
      assert.ok(!page.body.includes('<script>alert(1)'), 'no raw error markup in the page');
      const initial = embeddedJson(page.body, 'certstate-initial') as { names: Array<NameStatus & { history: Array<{ error?: { message: string } }> }> };
      assert.equal(initial.names[0]!.lastError!.message, HOSTILE);
      assert.equal(initial.names[0]!.lastError!.detail, '<b>detail</b>');
      assert.equal(initial.names[0]!.history.at(-1)!.error!.message, HOSTILE, 'the failing transition is in the history with its error');
    } finally {
      await f.close();
    }
  });
});

describe('access control', () => {
  it('with a token, every route needs it (header or ?token=), and a wrong one is refused', async () => {
    const f = await fixture(['a.example'], {}, { token: TOKEN });
    try {
      const base = f.admin.url;
      for (const path of ['', 'status.json', 'metrics', 'events', 'diagram.svg']) {
        assert.equal((await request(`${base}${path}`)).status, 401, `${path || '/'} without token`);
        assert.equal((await request(`${base}${path}`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401, `${path || '/'} with a wrong token`);
      }
      const missing = await request(base);
      assert.match(String(missing.headers['www-authenticate']), /^Bearer/);
      assert.equal((await request(`${base}status.json`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
      assert.equal((await request(`${base}?token=${TOKEN}`)).status, 200);
      const sse = await openSse(`${base}events?token=${TOKEN}`);
      assert.equal(sse.status, 200);
      sse.close();
      // Actions need the token too.
      const renewUrl = `${base}names/a.example/renew`;
      assert.equal((await request(renewUrl, { method: 'POST', headers: { 'x-certstate-action': 'renew' } })).status, 401);
    } finally {
      await f.close();
    }
  });

  it('actions cannot be triggered cross-site: they need the custom header and a same-origin Origin', async () => {
    const f = await fixture(['a.example']);
    try {
      const url = `${f.admin.url}names/a.example/renew`;
      const host = new URL(f.admin.url).host;
      const calls = f.issuer.callsFor('a.example');
      // A cross-site <form> POST: no custom header.
      assert.equal((await request(url, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' } })).status, 403);
      assert.equal((await request(url, { method: 'POST' })).status, 403);
      // Even with the header (a misconfigured CORS proxy, a browser bug): cross-origin refused.
      assert.equal((await request(url, { method: 'POST', headers: { 'x-certstate-action': '1', origin: 'https://evil.example' } })).status, 403);
      assert.equal((await request(url, { method: 'POST', headers: { 'x-certstate-action': '1', 'sec-fetch-site': 'cross-site' } })).status, 403);
      assert.equal((await request(url, { method: 'GET' })).status, 405);
      assert.equal(f.issuer.callsFor('a.example'), calls, 'no refused request started an attempt');
      // Same origin with the header: accepted, one attempt.
      const ok = await request(`${url}?wait=1`, { method: 'POST', headers: { 'x-certstate-action': '1', origin: `http://${host}` } });
      assert.equal(ok.status, 200, ok.body);
      assert.equal(f.issuer.callsFor('a.example'), calls + 1);
      assert.equal((await request(`${f.admin.url}names/unknown.example/renew`, { method: 'POST', headers: { 'x-certstate-action': '1' } })).status, 404);
      assert.equal((await request(`${f.admin.url}names/%ZZ/renew`, { method: 'POST', headers: { 'x-certstate-action': '1' } })).status, 400);
    } finally {
      await f.close();
    }
  });

  it('without a token, a non-loopback Host header is refused (DNS rebinding)', async () => {
    const f = await fixture(['a.example']);
    try {
      assert.equal((await request(f.admin.url, { headers: { host: 'rebind.evil.example' } })).status, 403);
      assert.equal((await request(f.admin.url, { headers: { host: 'localhost:1234' } })).status, 200);
    } finally {
      await f.close();
    }
  });

  it('serveAdmin refuses to bind beyond loopback without a token, and refuses short tokens', async () => {
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [perNameIssuer()] });
    await assert.rejects(serveAdmin(engine, { host: '0.0.0.0' }), ConfigError);
    await assert.rejects(serveAdmin(engine, { host: '::' }), ConfigError);
    await assert.rejects(serveAdmin(engine, { host: '192.0.2.1' }), ConfigError);
    await assert.rejects(serveAdmin(engine, { host: '127.0.0.1', token: 'short' }), ConfigError);
    const ok = await serveAdmin(engine, { host: '0.0.0.0', token: TOKEN });
    await ok.close();
    await engine.stop();
  });
});

describe('live updates', () => {
  it('SSE sends a snapshot on connect, then each transition of a forced renewal, with its history', async () => {
    const f = await fixture(['live.example', 'other.example']);
    const sse = await openSse(`${f.admin.url}events`);
    try {
      const snapshot = await sse.next((e) => e.event === 'snapshot');
      const names = (snapshot.data as { names: NameStatus[] }).names;
      assert.deepEqual(names.map((n) => [n.name, n.state]).sort(), [['live.example', 'valid'], ['other.example', 'valid']]);

      const before = f.engine.status().find((s) => s.name === 'live.example')!.certificate!.fingerprint;
      await f.engine.forceRenew('live.example');
      const update = await sse.next((e) => {
        const d = e.data as { names?: Array<{ name: string; state: string; history: Array<{ from?: string; to: string }> }> };
        return e.event === 'update' && !!d.names?.some((n) => n.name === 'live.example' && n.state === 'valid' && n.history.some((h) => h.from === 'renewing' && h.to === 'valid'));
      });
      const view = (update.data as { names: Array<NameStatus & { history: Array<{ from?: string; to: string; attempt?: number; reason?: string }> }> }).names.find((n) => n.name === 'live.example')!;
      assert.notEqual(view.certificate!.fingerprint, before, 'the update carries the new certificate');
      const trail = view.history.map((h) => `${h.from ?? 'start'}>${h.to}`);
      assert.deepEqual(trail.slice(-2), ['valid>renewing', 'renewing>valid']);
      assert.equal(view.history.at(-2)!.reason, 'renew', 'the attempt that started is annotated');
      assert.ok(!sse.events.some((e) => e.event === 'update' && (e.data as { names: NameStatus[] }).names.some((n) => n.name === 'other.example')), 'other names are not resent');
    } finally {
      sse.close();
      await f.close();
    }
  });
});

describe('metrics', () => {
  it('a scrape agrees with status(): names per state, expiring certificates; attempts are counted by result and error type', async () => {
    const f = await fixture(['ok1.example', 'ok2.example', 'bad.example', 'slow.example'], {
      'bad.example': { kind: 'fail', message: 'CA refused' },
      'slow.example': { kind: 'hang' },
    });
    try {
      await until(() => f.engine.status().find((s) => s.name === 'slow.example')?.state === 'obtaining');
      const res = await request(`${f.admin.url}metrics`);
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      const metrics = parseMetrics(res.body);
      const status = f.engine.status();
      const now = Date.now();
      const states: LifecycleState[] = ['loading', 'obtaining', 'valid', 'renewing', 'expired-renewing', 'failed-backoff', 'stopped'];
      for (const state of states) {
        assert.equal(metrics.get(`certstate_names{state="${state}"}`), status.filter((s) => s.state === state).length, `names in ${state}`);
      }
      assert.equal(metrics.get('certstate_names{state="valid"}'), 2);
      assert.equal(metrics.get('certstate_names{state="failed-backoff"}'), 1);
      assert.equal(metrics.get('certstate_names{state="obtaining"}'), 1);
      const within = (days: number) => status.filter((s) => s.certificate && s.certificate.notAfter <= now + days * 86_400_000).length;
      assert.equal(metrics.get('certstate_certificates_expiring{within="7d"}'), within(7));
      assert.equal(metrics.get('certstate_certificates_expiring{within="14d"}'), within(14));
      assert.equal(within(14), 2, 'local CA leaves (7 days) count as expiring within 14 days');
      const soonest = Math.min(...status.filter((s) => s.certificate).map((s) => s.certificate!.notAfter));
      assert.equal(metrics.get('certstate_certificate_next_expiry_timestamp_seconds'), soonest / 1000);
      assert.equal(metrics.get('certstate_issuance_attempts_total{issuer="per-name",result="success",error_type=""}'), 2);
      assert.equal(metrics.get('certstate_issuance_attempts_total{issuer="per-name",result="failure",error_type="IssuanceError"}'), 1);
      assert.equal(metrics.get('certstate_handshake_wait_seconds_count'), 0);
    } finally {
      await f.close();
    }
  });

  it('renderMetrics from a status list; the writer escapes label values', () => {
    const now = Date.UTC(2026, 0, 1);
    const cert = (days: number) => ({ fingerprint: 'F', serial: '1', names: ['x'], notBefore: now - 86_400_000, notAfter: now + days * 86_400_000, issuer: 'CN=x', issuerId: 'i' });
    const status: NameStatus[] = [
      { name: 'a', state: 'valid', managed: true, attempts: 0, certificate: cert(5) },
      { name: 'b', state: 'valid', managed: true, attempts: 0, certificate: cert(10) },
      { name: 'c', state: 'expired-renewing', managed: true, attempts: 0, certificate: cert(-1) },
      { name: 'd', state: 'obtaining', managed: false, attempts: 0 },
    ];
    const m = parseMetrics(renderMetrics(status, now));
    assert.equal(m.get('certstate_certificates_expiring{within="7d"}'), 2);
    assert.equal(m.get('certstate_certificates_expiring{within="14d"}'), 3);
    assert.equal(m.get('certstate_certificates_expired'), 1);
    assert.equal(m.get('certstate_names{state="valid"}'), 2);
    assert.equal(m.get('certstate_names{state="stopped"}'), 0);

    const text = new PrometheusWriter().counter('x_total', 'help\\with\nnewline', [{ labels: { v: 'a"b\\c\nd' }, value: 1 }]).toString();
    assert.equal(text, '# HELP x_total help\\\\with\\nnewline\n# TYPE x_total counter\nx_total{v="a\\"b\\\\c\\nd"} 1\n');
    assert.throws(() => new PrometheusWriter().gauge('bad name', 'h', []));
  });

  it('handshakes are counted from the engine\'s handshake event: immediate, waited (with its wait) and failed', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = perNameIssuer();
    issuer.outcomes.set('slow.example', { kind: 'hang' });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['fast.example', 'slow.example'], clock, handshakeTimeout: 2_000 });
    const collector = new MetricsCollector({ issuerIds: [issuer.id] });
    const off = collector.attach(engine);
    await engine.start();
    try {
      await until(() => engine.status().find((s) => s.name === 'fast.example')?.state === 'valid');
      await engine.getCertificate('fast.example'); // valid: at once
      const held = engine.getCertificate('slow.example').catch((e: Error) => e); // obtaining: held…
      await new Promise((r) => setImmediate(r));
      clock.advance(2_000); // …until its deadline: a failure after a 2 s wait
      assert.equal((await held as Error).name, 'HandshakeTimeoutError');
      await assert.rejects(engine.getCertificate('unknown.example')); // refused at once
      assert.deepEqual(collector.handshakes(), { immediate: 1, waited: 0, failed: 2 });
      const m = parseMetrics(renderMetrics(engine.status(), clock.now(), collector));
      assert.equal(m.get('certstate_handshakes_total{answer="immediate"}'), 1);
      assert.equal(m.get('certstate_handshakes_total{answer="failed"}'), 2);
      assert.equal(m.get('certstate_handshake_wait_seconds_count'), 1, 'only the held handshake is a wait');
      assert.equal(m.get('certstate_handshake_wait_seconds_sum'), 2);
      assert.equal(m.get('certstate_handshake_wait_seconds_bucket{le="1"}'), 0);
      assert.equal(m.get('certstate_handshake_wait_seconds_bucket{le="2.5"}'), 1);
      assert.equal(m.get('certstate_handshake_wait_seconds_bucket{le="+Inf"}'), 1);
      collector.observeHandshake({ outcome: 'waited', waitedMs: 40 });
      assert.equal(collector.handshakes().waited, 1);
    } finally {
      off();
      await engine.stop();
    }
  });
});

describe('diagrams', () => {
  it('Mermaid and SVG are drawn from the real chart: every state and its transitions', () => {
    const mermaid = toMermaid(certificateMachine);
    assert.match(mermaid, /^stateDiagram-v2\n/);
    for (const line of [
      '[*] --> loading',
      'state routing <<choice>>',
      'state attempting {',
      'attempting --> failed_backoff : attempt error',
      'valid --> routing : after untilRenewal',
      'failed_backoff --> attempting : FORCE_RENEW',
      'loading --> storage_unreadable : load error',
      'serving --> refusing : after untilExpiry',
      'stopped --> [*]',
    ]) {
      assert.ok(mermaid.includes(line), `mermaid has ${line}`);
    }
    assert.deepEqual(lifecycleStates(certificateMachine).sort(), [...LIFECYCLE_STATES].sort(), 'the lifecycle states are the chart\'s resting states');

    const svg = toSvg(certificateMachine, { highlight: 'expired-renewing' });
    for (const state of lifecycleStates(certificateMachine)) assert.ok(svg.includes(`data-state="${state}"`), `svg draws ${state}`);
    assert.match(svg, /<g class="state current" data-state="expired-renewing" aria-current="true">/);
    assert.match(svg, /<g class="compound active" data-state="attempting">/, 'the enclosing compound state is marked');
    assert.equal(svg.match(/class="state current/g)?.length, 1);
    assert.ok(!/https?:\/\/(?!www\.w3\.org\/2000\/svg)/.test(svg), 'no external references');
  });
});

describe('transition history', () => {
  it('keeps the last N transitions per name and at most maxNames names, least recently changed dropped first', () => {
    const history = new TransitionHistory({ perName: 2, maxNames: 2 });
    history.record('a', { at: 1, from: undefined, to: 'loading' });
    history.record('a', { at: 2, from: 'loading', to: 'obtaining' });
    history.record('a', { at: 3, from: 'obtaining', to: 'valid' });
    assert.deepEqual(history.of('a').map((t) => t.to), ['obtaining', 'valid']);
    history.record('b', { at: 4, from: undefined, to: 'loading' });
    history.record('a', { at: 5, from: 'valid', to: 'renewing' }); // a is now the most recent
    history.record('c', { at: 6, from: undefined, to: 'loading' }); // evicts b
    assert.deepEqual(Object.keys(history.all()).sort(), ['a', 'c']);
    assert.deepEqual(history.of('b'), []);
  });
});

describe('event iterator', () => {
  it('yields engine events in order and unsubscribes on abort', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const engine = createCertEngine({ storage, issuers: [perNameIssuer()], names: ['it.example'] });
    const controller = new AbortController();
    const seen: string[] = [];
    const consumer = (async () => {
      for await (const event of engineEvents(engine, { signal: controller.signal })) {
        seen.push(event.type === 'state_changed' ? `${event.type}:${event.to}` : event.type);
        if (event.type === 'state_changed' && event.to === 'valid') controller.abort();
      }
    })();
    await engine.start();
    await consumer;
    assert.deepEqual(seen, ['cert_obtaining', 'state_changed:obtaining', 'cert_obtained', 'state_changed:valid']);
    await engine.stop();
  });
});

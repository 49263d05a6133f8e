/**
 * The status page in a real browser (Debian's Chromium via playwright-core):
 * it lists names, shows a renewal live, highlights the selected name's state
 * in the statechart, renders hostile CA text as text, and its "Retry now"
 * button starts exactly one attempt. Values of any type (a number as an
 * error's type, objects as messages, huge strings, impossible times) are
 * shown as text in every row, from the handler and from raw JSON handed to
 * the page script itself. Saves .test-artifacts/status-page.png.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { createAdminHandler } from '../src/admin/handler.js';
import { renderPage } from '../src/admin/page.js';
import { serveAdmin } from '../src/admin/serve.js';
import { toSvg } from '../src/admin/diagram.js';
import { certificateMachine } from '../src/machines/certificate.js';
import type { NameStatus } from '../src/types.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine } from '../src/engine/engine.js';
import { CHROMIUM_ARGS, CHROMIUM_PATH, chromiumAvailability, perNameIssuer } from './helpers/browser.js';
import { installTestCa } from './helpers/scripted-issuer.js';

const ARTIFACTS = path.resolve(import.meta.dirname, '..', '.test-artifacts');
const HOSTILE = `<img src=x onerror="window.__pwned=1">`;
const TOKEN = 'browser-test-token-0123456789';

async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The lifecycle state the chart currently highlights. */
function highlighted(page: Page): Promise<string | null> {
  return page.locator('#chart g.current').getAttribute('data-state');
}

/** Texts of the selected name's history entries, newest first. */
function history(page: Page): Promise<string[]> {
  return page.locator('#history li').evaluateAll((items) => items.map((li) => `${li.getAttribute('data-from') || 'start'}>${li.getAttribute('data-to')}`));
}

describe('status page in Chromium', () => {
  it('lists names, shows a renewal live, highlights the right state, and "Retry now" starts exactly one attempt', async (t) => {
    const availability = chromiumAvailability();
    if (!availability.available) return t.skip(availability.message);
    const { chromium } = await import('playwright-core');

    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = perNameIssuer({ id: 'test-ca' });
    issuer.outcomes.set('flaky.example', { kind: 'fail', message: `CA says no ${HOSTILE}`, detail: `problem detail ${HOSTILE}`, code: 'urn:ietf:params:acme:error:connection' });
    const engine = createCertEngine({
      storage,
      issuers: [issuer],
      names: ['alpha.example', 'beta.example', 'flaky.example'],
      timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 },
    });
    const admin = await serveAdmin(engine, { token: TOKEN, updateIntervalMs: 20, issuerIds: [issuer.id] });
    let browser: Browser | undefined;
    try {
      await engine.start();
      await until(() => engine.status().every((s) => s.state === 'valid' || s.state === 'failed-backoff'));
      browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
      const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
      const dialogs: string[] = [];
      page.on('dialog', (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      const failedRequests: string[] = [];
      page.on('requestfailed', (r) => failedRequests.push(r.url()));
      page.on('request', (r) => {
        if (!r.url().startsWith(admin.url)) failedRequests.push(`external: ${r.url()}`);
      });
      await page.goto(`${admin.url}?token=${TOKEN}`);
      await page.locator('#conn.live').waitFor();

      // Every name is listed with its state.
      const rows = page.locator('#names tbody tr');
      assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => `${tr.getAttribute('data-name')}:${tr.getAttribute('data-state')}`)), [
        'alpha.example:valid',
        'beta.example:valid',
        'flaky.example:failed-backoff',
      ]);
      // Hostile CA text is shown as text: no element, no script ran.
      const errorCell = page.locator('tr[data-name="flaky.example"] td.last-error');
      assert.ok((await errorCell.textContent())!.includes(`CA says no ${HOSTILE}`));
      assert.ok((await errorCell.textContent())!.includes(`CA: problem detail ${HOSTILE}`));
      assert.equal(await page.locator('#names img, #history img').count(), 0);
      assert.equal(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned), undefined);

      // Selecting a name highlights its state in the statechart.
      await page.locator('tr[data-name="alpha.example"]').click();
      assert.equal(await page.locator('#detail-name').textContent(), 'alpha.example');
      assert.equal(await highlighted(page), 'valid');
      await page.locator('tr[data-name="flaky.example"]').click();
      assert.equal(await highlighted(page), 'failed-backoff');
      assert.equal(await page.locator('#chart g.current').count(), 1);

      // A renewal shows up live: the state, the highlight and the history follow it.
      await page.locator('tr[data-name="alpha.example"]').click();
      issuer.outcomes.set('alpha.example', { kind: 'succeed', delayMs: 700 });
      const renewal = engine.forceRenew('alpha.example');
      await page.locator('tr[data-name="alpha.example"][data-state="renewing"]').waitFor();
      await page.locator('#chart g.state.current[data-state="renewing"]').waitFor();
      assert.equal(await page.locator('#chart g.compound.active').getAttribute('data-state'), 'attempting');
      await renewal;
      await page.locator('tr[data-name="alpha.example"][data-state="valid"]').waitFor();
      await page.locator('#chart g.state.current[data-state="valid"]').waitFor();
      assert.deepEqual((await history(page)).slice(0, 2), ['renewing>valid', 'valid>renewing']);

      // "Retry now" on the failing name: exactly one attempt, even when clicked twice.
      await page.locator('tr[data-name="flaky.example"]').click();
      issuer.outcomes.set('flaky.example', { kind: 'fail', message: 'still down', delayMs: 600 });
      const before = issuer.callsFor('flaky.example');
      const button = page.locator('tr[data-name="flaky.example"] button[data-action="renew"]');
      assert.equal(await button.textContent(), 'Retry now');
      await button.click();
      await button.click({ force: true, timeout: 1000 }).catch(() => undefined); // a disabled or re-rendered button: ignored
      await page.locator('tr[data-name="flaky.example"][data-state="obtaining"]').waitFor();
      await page.locator('#chart g.state.current[data-state="obtaining"]').waitFor();
      await page.locator('tr[data-name="flaky.example"][data-state="failed-backoff"]').waitFor();
      await new Promise((r) => setTimeout(r, 300)); // room for a second attempt, if one had been started
      assert.equal(issuer.callsFor('flaky.example'), before + 1, 'one click, one attempt');
      assert.ok((await page.locator('tr[data-name="flaky.example"] td.last-error').textContent())!.includes('still down'));
      assert.equal((await history(page))[0], 'obtaining>failed-backoff');
      assert.equal(await page.locator('tr[data-name="flaky.example"] td.attempts').textContent(), '2');

      await mkdir(ARTIFACTS, { recursive: true });
      await page.locator('tr[data-name="alpha.example"]').click();
      await page.screenshot({ path: path.join(ARTIFACTS, 'status-page.png'), fullPage: true });
      assert.deepEqual(dialogs, [], 'no dialog opened');
      assert.deepEqual(failedRequests, [], 'no failed or external request');
    } finally {
      await browser?.close();
      await admin.close();
      await engine.stop();
    }
  });
});

/** Serve `handler` on loopback; returns its base URL and a closer. */
async function serve(handler: http.RequestListener): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Open `url` in Chromium, collecting script errors and console errors; `use` the page. */
async function inChromium(url: string, use: (page: Page, problems: string[]) => Promise<void>): Promise<void> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('dialog', (d) => {
      problems.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    await page.goto(url);
    await use(page, problems);
  } finally {
    await browser.close();
  }
}

/** Text of each row's cells, by row name. */
function rowTexts(page: Page): Promise<Record<string, Record<string, string>>> {
  return page.locator('#names tbody tr').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.getAttribute('data-name'), Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.className, td.textContent ?? '']))])),
  );
}

const HUGE = 'H'.repeat(500_000);

describe('status page with hostile values, in Chromium', () => {
  it('from the handler: an error whose type is a number, HTML and huge messages: every row rendered, as text, bounded', async (t) => {
    const availability = chromiumAvailability();
    if (!availability.available) return t.skip(availability.message);
    const status = [
      { name: 'a.example', state: 'failed-backoff', managed: true, attempts: 1, lastError: { type: 42, message: HOSTILE, at: 1 } },
      { name: 'b.example', state: 'failed-backoff', managed: true, attempts: 2, lastError: { type: { toString: () => 'x' }, message: HUGE, detail: HUGE, code: 7n, at: 1 } },
      { name: 'c.example', state: 'valid', managed: true, attempts: 0, certificate: { fingerprint: 'F', serial: 1n, names: ['c.example'], notBefore: 0, notAfter: 1e300, issuer: null, issuerId: 99 } },
      { name: 'd.example', state: 'valid', managed: false, attempts: 0, renewAt: Number.POSITIVE_INFINITY },
    ] as unknown as NameStatus[];
    const engine = { status: () => status, on: () => () => {}, forceRenew: async () => Promise.reject(new Error('no')), clock: { now: () => Date.now() } };
    const handler = createAdminHandler(engine);
    const server = await serve(handler);
    try {
      await inChromium(server.url, async (page, problems) => {
        await page.locator('#conn.live').waitFor();
        const rows = await rowTexts(page);
        assert.deepEqual(Object.keys(rows), ['a.example', 'b.example', 'c.example', 'd.example'], 'every row rendered');
        assert.equal(rows['a.example']!['last-error'], `42: ${HOSTILE}`);
        assert.ok(rows['b.example']!['last-error']!.length < 5_000, `a huge message is clipped (${rows['b.example']!['last-error']!.length} characters)`);
        assert.match(rows['b.example']!['last-error']!, /^\{\}: H+…CA: H+…7$/);
        assert.equal(rows['c.example']!.issuer, '99');
        assert.equal(rows['c.example']!['not-after'], '—');
        assert.equal(rows['d.example']!['renew-at'], '—');
        assert.equal(await page.locator('#names img').count(), 0);
        assert.equal(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned), undefined);
        assert.deepEqual(problems, []);
      });
    } finally {
      handler.close();
      await server.close();
    }
  });

  it('the page script alone, fed raw JSON of any type (initial and over SSE): every row rendered, as text, no exception', async (t) => {
    const availability = chromiumAvailability();
    if (!availability.available) return t.skip(availability.message);
    // What no certstate server sends, to prove the page does not rely on it: numbers, objects and arrays where text goes.
    const raw = (n: number) => ({
      name: 10_000 + n,
      state: n,
      managed: 'yes',
      attempts: { count: n },
      lastError: { type: 42, message: { html: HOSTILE }, detail: [HOSTILE], code: true },
      certificate: { issuerId: { id: 1 }, issuer: 5, notAfter: 1e300 },
      renewAt: 'soon',
      nextAttemptAt: -1e300,
      history: [{ at: 'now', from: 1, to: { s: 'valid' }, attempt: [1], reason: 2, notAfter: 'x', error: { type: null, message: 5, detail: {} } }, 'junk', null],
    });
    const nonce = randomBytes(16).toString('base64');
    let server: Awaited<ReturnType<typeof serve>> | undefined;
    server = await serve((req, res) => {
      if (req.url === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`event: update\ndata: ${JSON.stringify({ now: Date.now(), names: [raw(2)], removed: [10_003] })}\n\n`);
        return;
      }
      const html = renderPage({
        config: { paths: { events: '/events', status: '/status.json', renew: '/names/{name}/renew', metrics: '/metrics' }, parents: {}, title: 'raw' },
        initial: { now: Date.now(), names: [raw(1), raw(3), 'not a view', null] },
        svg: toSvg(certificateMachine, { styleNonce: nonce }),
        nonce,
      });
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src data:` });
      res.end(html);
    });
    try {
      await inChromium(server.url, async (page, problems) => {
        await page.locator('tr[data-name="10002"]').waitFor(); // the SSE update arrived: added one, removed one
        const rows = await rowTexts(page);
        assert.deepEqual(Object.keys(rows).sort(), ['10001', '10002']);
        for (const row of Object.values(rows)) {
          assert.equal(row['last-error'], `42: ${JSON.stringify({ html: HOSTILE })}CA: ${JSON.stringify([HOSTILE])}true`);
          assert.equal(row.attempts, '{"count":1}'.replace('1', row.name === '10001' ? '1' : '2'));
          assert.equal(row.issuer, '{"id":1}');
          assert.deepEqual([row['not-after'], row['renew-at'], row['next-attempt']], ['—', '—', '—']);
        }
        await page.locator('tr[data-name="10002"]').click();
        assert.equal(await page.locator('#detail-name').textContent(), '10002');
        assert.deepEqual(await page.locator('#history li').allTextContents(), [` 1 → {"s":"valid"} · attempt [1] (2): 5CA: {}`]);
        assert.equal(await page.locator('#names img, #history img').count(), 0);
        assert.equal(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned), undefined);
        assert.deepEqual(problems, []);
      });
    } finally {
      await server.close();
    }
  });
});

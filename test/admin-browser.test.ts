/**
 * The status page in a real browser (Debian's Chromium via playwright-core):
 * it lists names, shows a renewal live, highlights the selected name's state
 * in the statechart, renders hostile CA text as text, and its "Retry now"
 * button starts exactly one attempt. Saves .test-artifacts/status-page.png.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { serveAdmin } from '../src/admin/serve.js';
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

/**
 * On-demand names cost nothing until they are allowed AND budgeted; names
 * that never obtain are asked about again before every retry, and are paused
 * after failing for days (Let's Encrypt's "zombie" identifiers) until an
 * operator or a fresh allowed handshake resumes them.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { CertificateUnavailableError, NameNotAllowedError } from '../src/errors.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Wrap a storage and record the keys of every write, delete and lock. */
function recording(inner: Storage) {
  const writes: string[] = [];
  const locks: string[] = [];
  const storage: Storage = {
    description: 'recording',
    load: (k) => inner.load(k),
    store: (k, v, o) => (writes.push(k), inner.store(k, v, o)),
    delete: (k, o) => (writes.push(k), inner.delete(k, o)),
    list: (p) => inner.list(p),
    stat: (k) => inner.stat(k),
    lock: (k, t, o) => (locks.push(k), inner.lock(k, t, o)),
  };
  return { storage, writes, locks };
}

const ticks = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('on-demand names refused by the issuance budget', () => {
  for (const [kind, count] of [['memory', 3000], ['file', 300]] as const) {
    it(`${count.toLocaleString('en')} names on ${kind} storage: no storage write or lock for any refused name, no live actor kept for them`, { timeout: 60_000 }, async () => {
      const root = await mkdtemp(path.join(tmpdir(), 'certstate-budget-'));
      const inner = kind === 'file' ? fileStorage(root) : memoryStorage();
      await installTestCa(inner);
      const { storage, writes, locks } = recording(inner);
      const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
      const burst = 5;
      const clock = new ManualClock();
      const engine = createCertEngine({
        storage,
        clock,
        issuers: [issuer],
        sessionTickets: false,
        storageCleaner: false,
        handshakeTimeout: 600_000,
        onDemand: { decide: () => true, maxPendingDecisions: 10_000, rateLimit: { burst, refillPerSecond: 1 / 3600 } },
      });
      await engine.start();
      try {
        const names = Array.from({ length: count }, (_, i) => `n${i}.budget.example`);
        const results = await Promise.allSettled(names.map((n) => engine.getCertificate(n)));
        const served = names.filter((_, i) => results[i]!.status === 'fulfilled');
        const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as Error);
        assert.equal(served.length, burst, 'the burst was issued');
        assert.equal(issuer.calls, burst, 'one order per budgeted name');
        const odd = refused.filter((e) => !((e instanceof CertificateUnavailableError || e instanceof NameNotAllowedError) && /rate-limited/.test(e.message)));
        assert.deepEqual(odd.slice(0, 3).map((e) => `${e.name}: ${e.message}`), [], 'the others are refused by the budget');
        const refusedNames = new Set(names.filter((n) => !served.includes(n)));
        const touched = (key: string) => refusedNames.has(key.replace(/^[a-z]+\/(issue\/)?/, '').replace(/\.json$/, ''));
        assert.deepEqual(locks.filter(touched), [], 'no lock taken for a refused name');
        assert.deepEqual(writes.filter(touched), [], 'no write for a refused name');
        assert.equal(locks.length, burst, 'one lock per issued name');
        if (kind === 'file') {
          const lockDirs = await readdir(path.join(root, '~locks', 'locks', 'issue')).catch(() => []);
          assert.equal(lockDirs.length, burst, 'lock entries on disk: only the issued names');
        }
        await ticks();
        assert.ok(engine.stats.liveActors <= burst, `live actors ${engine.stats.liveActors} ≤ ${burst}`);
        assert.equal(engine.stats.names, burst, 'refused names are not held');
        // A refused name asked again later is refused again, still without a lock.
        await assert.rejects(engine.getCertificate(names.find((n) => refusedNames.has(n))!), /rate-limited/);
        assert.equal(locks.length, burst);
      } finally {
        await engine.stop();
        await rm(root, { recursive: true, force: true });
      }
    });
  }

  it('a token taken for an attempt that orders nothing is given back', async () => {
    const inner = memoryStorage();
    await installTestCa(inner);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const clock = new ManualClock();
    // The attempt finds a certificate another process stored meanwhile: adopted, no order, the token is returned.
    const other = createCertEngine({ storage: inner, clock, issuers: [issuer], names: ['adopt.budget.example'], sessionTickets: false, storageCleaner: false });
    await other.start();
    await other.getCertificate('adopt.budget.example');
    await other.stop();
    let hideStored = true;
    const storage: Storage = { ...inner, load: (k) => (hideStored && k.startsWith('certificates/') ? Promise.resolve(undefined) : inner.load(k)) };
    const engine = createCertEngine({
      storage,
      clock,
      issuers: [issuer],
      sessionTickets: false,
      storageCleaner: false,
      onDemand: { decide: () => true, rateLimit: { burst: 1, refillPerSecond: 1 / 3600 } },
    });
    await engine.start();
    try {
      // The actor's load sees nothing; the attempt's re-read under the lock sees the stored certificate.
      const loaded = new Promise<void>((resolve) => engine.on('cert_obtaining', () => ((hideStored = false), resolve())));
      const adopted = engine.getCertificate('adopt.budget.example');
      await loaded;
      await adopted;
      assert.equal(issuer.calls, 1, 'adopted, not ordered');
      await engine.getCertificate('fresh.budget.example');
      assert.equal(issuer.calls, 2, 'the budget still had its one token for a real order');
    } finally {
      await engine.stop();
    }
  });
});

/** An engine whose issuer always fails, with a decision that counts its calls. */
async function failingOnDemand(options: { pauseAfterMs?: number; cacheTtlMs?: number } = {}) {
  const storage = memoryStorage();
  await installTestCa(storage);
  const issuer = scriptedIssuer({ mode: { kind: 'fail' } });
  const clock = new ManualClock();
  const decisions: string[] = [];
  let allow = true;
  const engine = createCertEngine({
    storage,
    clock,
    issuers: [issuer],
    sessionTickets: false,
    storageCleaner: false,
    onDemand: { decide: (name) => (decisions.push(name), allow), ...options },
  });
  await engine.start();
  return { engine, issuer, clock, decisions, setAllow: (value: boolean) => (allow = value) };
}

/** The status page and its JSON show the name as paused, with "Retry now", and the diagram has the state. */
async function showsPaused(engine: CertEngine, name: string): Promise<void> {
  const handler = engine.adminHandler();
  const server = http.createServer(handler).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const get = async (path: string) => {
    const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`);
    return response.text();
  };
  try {
    const json = JSON.parse(await get('/status.json')) as { names: Array<{ name: string; state: string; nextAttemptAt?: number }> };
    const row = json.names.find((n) => n.name === name);
    assert.equal(row?.state, 'paused', 'status.json: paused');
    assert.equal(row?.nextAttemptAt, undefined, 'status.json: no next attempt');
    const page = await get('/');
    assert.ok(page.includes('"state":"paused"'), 'the page carries the paused row');
    assert.ok(page.includes("s === 'paused'"), 'the page offers "Retry now" for a paused name');
    assert.ok((await get('/diagram.svg?state=paused')).includes('paused'), 'the diagram has the paused state');
  } finally {
    handler.close();
    await new Promise((r) => server.close(r));
  }
}

/** Move the clock to the name's next attempt (or by `maxMs` when it has none) and let what is due run. */
async function untilNextAttempt(engine: CertEngine, clock: ManualClock, name: string, maxMs = 8 * HOUR): Promise<void> {
  const next = engine.statusOf(name)?.nextAttemptAt;
  clock.advanceTo(next !== undefined && next - clock.now() < maxMs ? next : clock.now() + maxMs);
  await ticks(40);
}

describe('on-demand names that never obtain', () => {
  it('are asked about again before every retry; a denial then stops the orders and evicts the name', async () => {
    const { engine, issuer, clock, decisions, setAllow } = await failingOnDemand();
    const name = 'never.example.com';
    try {
      await assert.rejects(engine.getCertificate(name), CertificateUnavailableError);
      assert.equal(issuer.calls, 1);
      assert.equal(decisions.length, 1, 'asked at the first handshake');
      for (let retry = 1; retry <= 4; retry++) {
        await untilNextAttempt(engine, clock, name);
        assert.equal(issuer.calls, 1 + retry, `retry ${retry} ordered`);
        assert.equal(decisions.length, 1 + retry, `asked again before retry ${retry} (the allow is still cached for an hour)`);
      }
      setAllow(false);
      await untilNextAttempt(engine, clock, name);
      assert.equal(decisions.length, 6, 'asked before the next retry');
      assert.equal(issuer.calls, 5, 'denied: no order');
      await ticks();
      assert.equal(engine.statusOf(name), undefined, 'evicted');
    } finally {
      await engine.stop();
    }
  });

  it('are paused after failing for days: orders stop; a fresh allowed handshake or forceRenew gives one attempt', async () => {
    // Allows cached for months: whatever is asked afresh is asked because it must be.
    const { engine, issuer, clock, decisions, setAllow } = await failingOnDemand({ cacheTtlMs: 100 * DAY });
    const name = 'zombie.example.com';
    try {
      await assert.rejects(engine.getCertificate(name), CertificateUnavailableError);
      const start = clock.now();
      // Three days (the default pause) of backoff-paced retries (the longest backoff is 6 h + 20 %), then nothing for ten more days.
      while (clock.now() - start < 3 * DAY + 8 * HOUR) await untilNextAttempt(engine, clock, name);
      assert.equal(engine.statusOf(name)?.state, 'paused', 'paused after three days of failing');
      assert.equal(engine.statusOf(name)?.nextAttemptAt, undefined, 'no next attempt shown');
      assert.equal(engine.statusOf(name)?.failingSince, start);
      const ordersWhenPaused = issuer.calls;
      assert.ok(ordersWhenPaused >= 3 && ordersWhenPaused <= 20, `orders before the pause: ${ordersWhenPaused}`);
      for (let i = 0; i < 40; i++) await untilNextAttempt(engine, clock, name);
      assert.equal(issuer.calls, ordersWhenPaused, 'no order while paused, over ten days');
      assert.equal(engine.status().find((s) => s.name === name)?.state, 'paused', 'status() shows it paused');
      await showsPaused(engine, name);

      // A fresh handshake: permission asked afresh (the cached allow is not enough), then one attempt.
      const asked = decisions.length;
      await assert.rejects(engine.getCertificate(name), CertificateUnavailableError);
      assert.equal(decisions.length, asked + 1, 'permission asked afresh');
      assert.equal(issuer.calls, ordersWhenPaused + 1, 'one attempt for the handshake');
      // Its backoff ends: paused again, no order of its own.
      for (let i = 0; i < 10; i++) await untilNextAttempt(engine, clock, name);
      assert.equal(engine.statusOf(name)?.state, 'paused');
      assert.equal(issuer.calls, ordersWhenPaused + 1);

      // The operator: one attempt, and it succeeds this time.
      issuer.mode = { kind: 'succeed' };
      const certificate = await engine.forceRenew(name);
      assert.ok(certificate.names.includes(name));
      assert.equal(issuer.calls, ordersWhenPaused + 2);
      assert.equal(engine.statusOf(name)?.state, 'valid');
      assert.equal(engine.statusOf(name)?.failingSince, undefined, 'the streak is over');

      // A paused name that is no longer allowed: the fresh handshake is refused and the name goes.
      setAllow(false);
    } finally {
      await engine.stop();
    }
  });

  it('a paused name that is no longer allowed is refused and evicted at its next handshake, without an order', async () => {
    const { engine, issuer, clock, setAllow } = await failingOnDemand({ pauseAfterMs: DAY });
    const name = 'gone.example.com';
    try {
      await assert.rejects(engine.getCertificate(name), CertificateUnavailableError);
      while (engine.statusOf(name)?.state !== 'paused') await untilNextAttempt(engine, clock, name);
      const orders = issuer.calls;
      setAllow(false);
      await assert.rejects(engine.getCertificate(name), NameNotAllowedError);
      assert.equal(issuer.calls, orders, 'no order');
      assert.equal(engine.statusOf(name), undefined, 'evicted');
    } finally {
      await engine.stop();
    }
  });

  it('the pause survives a restart (the failing streak is kept in the failure record)', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = scriptedIssuer({ mode: { kind: 'fail' } });
    const clock = new ManualClock();
    const make = () =>
      createCertEngine({ storage, clock, issuers: [issuer], sessionTickets: false, storageCleaner: false, onDemand: { decide: () => true, pauseAfterMs: DAY } });
    const name = 'restart.example.com';
    const first = make();
    await first.start();
    await assert.rejects(first.getCertificate(name), CertificateUnavailableError);
    while (first.statusOf(name)?.state !== 'paused') await untilNextAttempt(first, clock, name);
    await first.stop();
    const orders = issuer.calls;
    const second = make();
    await second.start();
    try {
      // The handshake after the restart is fresh (permission asked), so it gets its one attempt; then paused again at once.
      await assert.rejects(second.getCertificate(name), CertificateUnavailableError);
      assert.equal(issuer.calls, orders + 1);
      for (let i = 0; i < 10; i++) await untilNextAttempt(second, clock, name);
      assert.equal(second.statusOf(name)?.state, 'paused');
      assert.equal(issuer.calls, orders + 1, 'paused across the restart');
    } finally {
      await second.stop();
    }
  });
});

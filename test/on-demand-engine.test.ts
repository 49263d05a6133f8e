/**
 * On-demand issuance through the engine, under abuse: random SNI floods,
 * refusing and allowing decisions, a permission endpoint that is down.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { ConfigError, InvalidNameError, NameNotAllowedError } from '../src/errors.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Wrap a storage and count what reaches it. */
function counting(inner: Storage) {
  const counts = { load: 0, store: 0, delete: 0, lock: 0 };
  const storage: Storage = {
    description: 'counting',
    load: (k) => (counts.load++, inner.load(k)),
    store: (k, v, o) => (counts.store++, inner.store(k, v, o)),
    delete: (k) => (counts.delete++, inner.delete(k)),
    list: (p) => inner.list(p),
    stat: (k) => inner.stat(k),
    lock: (k, t, o) => (counts.lock++, inner.lock(k, t, o)),
  };
  return { storage, counts };
}

function resetCounts(counts: Record<string, number>): void {
  for (const key of Object.keys(counts)) counts[key] = 0;
}

const randomName = (i: number) => `r${i}-${Math.random().toString(36).slice(2, 10)}.example.com`;

async function settle<T>(promises: Promise<T>[]) {
  return Promise.allSettled(promises);
}

describe('on-demand issuance under abuse', () => {
  it('refuses configuration without a decision', () => {
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()], onDemand: {} }), ConfigError);
  });

  it('10,000 random names and a decision that says no: no attempt, no storage write, memory back to baseline', async () => {
    const { storage, counts } = counting(memoryStorage());
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    let decisions = 0;
    const engine = createCertEngine({ storage, issuers: [issuer], onDemand: { decide: () => (decisions++, false), maxCacheEntries: 1000 } });
    await engine.start();
    resetCounts(counts); // start-up's own storage work (the session-ticket keys) is not the handshakes'
    try {
      // Warm up code paths, then measure.
      await settle(Array.from({ length: 500 }, (_, i) => engine.getCertificate(randomName(i))));
      gc();
      const before = process.memoryUsage().heapUsed;
      for (let batch = 0; batch < 10; batch++) {
        const results = await settle(Array.from({ length: 1000 }, (_, i) => engine.getCertificate(randomName(batch * 1000 + i))));
        for (const r of results) {
          assert.equal(r.status, 'rejected');
          assert.ok((r as PromiseRejectedResult).reason instanceof NameNotAllowedError);
        }
      }
      assert.equal(issuer.calls, 0, 'no issuance attempt without an allow');
      assert.equal(counts.store + counts.delete + counts.lock, 0, 'refused handshakes cost no storage write or lock');
      assert.equal(engine.status().length, 0, 'no actor kept for a refused name');
      assert.ok(decisions >= 10_000, 'each new name was decided');
      gc();
      const growth = process.memoryUsage().heapUsed - before;
      assert.ok(growth < 8 * 1024 * 1024, `heap back near baseline (grew ${(growth / 1024).toFixed(0)} KiB)`);
    } finally {
      await engine.stop();
    }
  });

  it('10,000 random names and a decision that says yes: issuance bounded by the budget', async () => {
    const clock = new ManualClock();
    const inner = memoryStorage();
    await installTestCa(inner);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const burst = 5;
    const engine = createCertEngine({
      storage: inner,
      issuers: [issuer],
      clock,
      handshakeTimeout: 60_000,
      onDemand: { decide: () => true, rateLimit: { burst, refillPerSecond: 1 } },
    });
    await engine.start();
    try {
      const names = Array.from({ length: 10_000 }, (_, i) => randomName(i));
      const results = await settle(names.map((n) => engine.getCertificate(n)));
      const served = results.filter((r) => r.status === 'fulfilled').length;
      assert.equal(issuer.calls, burst, 'exactly the burst was issued at once');
      assert.equal(served, burst);
      const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as Error);
      // Refused by the issuance budget, or earlier by the decision gate's own overload bound (1,000 decisions in flight).
      assert.ok(refused.every((e) => /rate-limited|overloaded/.test(e.message)), 'the others are refused');
      assert.ok(refused.some((e) => /rate-limited/.test(e.message)), 'the budget refused some');
      // Ten seconds later, at 1 token/s, at most 10 more names can be issued, however many handshakes come.
      clock.advance(10_000);
      await settle(names.slice(0, 2000).map((n) => engine.getCertificate(n)));
      assert.ok(issuer.calls <= burst + 10, `issued ${issuer.calls} ≤ ${burst + 10}`);
    } finally {
      await engine.stop();
    }
  });

  it('hostile SNI values are rejected before any lookup, with a typed error', async () => {
    const { storage, counts } = counting(memoryStorage());
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], onDemand: { decide: () => true } });
    await engine.start();
    resetCounts(counts);
    try {
      for (const sni of ['a/../../etc/passwd', 'x\u0000.com', '*.example.com', '../x', 'a'.repeat(300) + '.com', '127.0.0.1', 'a.b.c.d.e.f.g.h.i.j.k.com']) {
        await assert.rejects(engine.getCertificate(sni), InvalidNameError);
      }
      assert.equal(counts.load + counts.store, 0, 'nothing reached storage');
    } finally {
      await engine.stop();
    }
  });

  it('an ask endpoint that is down refuses new names, but a stored valid certificate is still served', async () => {
    const inner = memoryStorage();
    await installTestCa(inner);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    // An endpoint that allows, so the first engine stores a certificate.
    const server = http.createServer((req, res) => res.writeHead(req.url?.includes('stored.example.com') ? 200 : 403).end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const askUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ask`;
    const first = createCertEngine({ storage: inner, issuers: [issuer], onDemand: { ask: askUrl } });
    await first.start();
    const stored = await first.getCertificate('stored.example.com');
    await assert.rejects(first.getCertificate('other.example.com'), NameNotAllowedError);
    await first.stop();
    await new Promise<void>((r) => server.close(() => r()));

    // The endpoint is gone: a new engine (restart) must still serve the stored certificate, and refuse new names.
    const second = createCertEngine({ storage: inner, issuers: [issuer], onDemand: { ask: askUrl, askTimeoutMs: 500 } });
    await second.start();
    try {
      const again = await second.getCertificate('stored.example.com');
      assert.equal(again.meta.fingerprint, stored.meta.fingerprint);
      await assert.rejects(second.getCertificate('new.example.com'), /decision-failed/);
      assert.equal(issuer.calls, 1, 'no order while the decision is down');
    } finally {
      await second.stop();
    }
  });
});

describe('on-demand names a later decision refuses', () => {
  it('get no renewal and are evicted', async () => {
    const clock = new ManualClock();
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' }, validityMs: 30 * 86_400_000 });
    let allow = true;
    const engine = createCertEngine({ storage, issuers: [issuer], clock, onDemand: { decide: () => allow } });
    await engine.start();
    try {
      await engine.getCertificate('customer.example.com');
      assert.equal(issuer.calls, 1);
      allow = false; // the customer left
      const renewAt = engine.statusOf('customer.example.com')!.renewAt!;
      const failed = new Promise((r) => engine.on('cert_failed', r));
      clock.advanceTo(renewAt);
      await failed;
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(issuer.calls, 1, 'no renewal order for a refused name');
      assert.equal(engine.statusOf('customer.example.com'), undefined, 'evicted');
      await assert.rejects(engine.getCertificate('customer.example.com'), NameNotAllowedError);
    } finally {
      await engine.stop();
    }
  });
});

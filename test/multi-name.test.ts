/**
 * Several names in ONE certificate (`names: [['example.test', '*.example.test']]`),
 * with the local CA: one actor, one order, one stored record under the first
 * name; a handshake for any of its names (or one its wildcard covers) served
 * from memory; renewal and forceRenew by any name; the coverage checks; the
 * configuration mistakes refused.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import { describe, it } from 'node:test';
import { nameView } from '../src/admin/view.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { ConfigError, NameNotAllowedError } from '../src/errors.js';
import type { Issuer, Storage } from '../src/types.js';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { keys } from '../src/storage-keys.js';
import { installTestCa, scriptedIssuer, testLeafKey } from './helpers/scripted-issuer.js';
import { interceptStorage } from './helpers/storage-wrap.js';
import { refusalsAsErrors, seedCertificate } from './helpers/tls.js';
import { pino } from 'pino';

const GROUP = ['example.test', '*.example.test'];
const DAY = 86_400_000;

async function testStorage(): Promise<Storage> {
  const storage = memoryStorage();
  await installTestCa(storage);
  return storage;
}

/** The SNI callback's answer, and whether it came synchronously (before the callback returned). */
function sni(engine: CertEngine, name: string): Promise<{ ctx: SecureContext; sync: boolean }> {
  return new Promise((resolve, reject) => {
    let returned = false;
    refusalsAsErrors(engine).SNICallback(name, (err, ctx) => (err ? reject(err) : resolve({ ctx: ctx!, sync: !returned })));
    returned = true;
  });
}

const sans = (pem: string) => (new X509Certificate(pem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();

function until(engine: CertEngine, event: 'cert_obtained' | 'cert_renewed' | 'cert_failed', name: string): Promise<void> {
  return new Promise((resolve) => {
    const off = engine.on(event, (e) => {
      if (e.name !== name) return;
      off();
      resolve();
    });
  });
}

describe('names: one certificate for several names — configuration', () => {
  const make = (names: unknown, extra: Record<string, unknown> = {}) => () =>
    createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()], names: names as never, ...extra });

  it('refuses an empty group, a name in two entries, a name twice in a group, one its own wildcard covers, more than 100, and a wrong shape', () => {
    assert.throws(make([[]]), (e: Error) => e instanceof ConfigError && /names\[0\]` is an empty group/.test(e.message));
    assert.throws(make(['example.test', GROUP]), (e: Error) => e instanceof ConfigError && /"example.test" is in `names\[0\]` and in `names\[1\]`/.test(e.message));
    assert.throws(make([GROUP, ['*.example.test', 'other.test']]), (e: Error) => e instanceof ConfigError && /a name belongs to one certificate/.test(e.message));
    assert.throws(make([GROUP, 'EXAMPLE.test.']), ConfigError, 'the same name after normalisation');
    assert.throws(make([['example.test', 'Example.TEST']]), (e: Error) => e instanceof ConfigError && /twice/.test(e.message));
    assert.throws(make([['*.example.test', 'a.example.test']]), (e: Error) => e instanceof ConfigError && /"a.example.test", which its "\*.example.test" already covers/.test(e.message));
    assert.throws(make([Array.from({ length: 101 }, (_, i) => `n${i}.example.test`)]), (e: Error) => e instanceof ConfigError && /at most 100/.test(e.message));
    assert.throws(make([['example.test', 1]]), (e: Error) => e instanceof ConfigError && /arrays of strings/.test(e.message));
    assert.throws(make([['a/b.test']]), /invalid|not allowed|character/i);
  });

  it('accepts a group with a name one label below another wildcard, a plain name repeated, a name its wildcard does not cover, and defaultName from a group', () => {
    make([GROUP, 'a.example.test', 'solo.test', 'solo.test', ['b.example.test', 'x.b.example.test']], { defaultName: 'x.b.example.test' })();
    make([['*.example.test', 'a.b.example.test', 'example.test']])();
    assert.throws(make([GROUP], { defaultName: 'other.test' }), ConfigError);
  });
});

describe('names: one certificate for several names — through the engine', () => {
  it('one actor, one order carrying every name, one stored record under the first; any of its names (and a name its wildcard covers) is served that certificate from memory', async () => {
    const inner = await testStorage();
    let calls = 0;
    const storage = interceptStorage(inner, { load: (k, next) => (calls++, next(k)), store: (k, v, o) => (calls++, inner.store(k, v, o)) });
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['solo.test', GROUP], maxLiveActors: 10 });
    await engine.start();
    try {
      await Promise.all([engine.getCertificate('example.test'), engine.getCertificate('solo.test')]);
      assert.deepEqual(issuer.requests.map((r) => r.names).sort(), [GROUP, ['solo.test']].sort(), 'one order per certificate, the group with all its names');
      assert.equal(engine.stats.names, 2);
      assert.equal(engine.stats.liveActors, 2, 'one actor for the group');
      const keys = (await inner.list('certificates/')).sort();
      assert.deepEqual(keys, ['certificates/example.test.json', 'certificates/solo.test.json'], 'one record, under the first name');

      const before = calls;
      const apex = await sni(engine, 'example.test');
      assert.ok(apex.sync, 'answered synchronously');
      for (const name of ['a.example.test', 'WWW.Example.Test.', 'b.example.test']) {
        const other = await sni(engine, name);
        assert.equal(other.ctx, apex.ctx, `${name}: the group's SecureContext`);
        assert.ok(other.sync, `${name}: answered synchronously`);
      }
      assert.notEqual((await sni(engine, 'solo.test')).ctx, apex.ctx);
      assert.equal(calls, before, 'no storage I/O on the handshake path');
      const served = await engine.getCertificate('a.example.test');
      assert.deepEqual(sans(served.certificatePem), ['*.example.test', 'example.test']);
      await assert.rejects(engine.getCertificate('a.b.example.test'), NameNotAllowedError, 'the wildcard covers one label only');

      const status = engine.status().find((s) => s.name === 'example.test');
      assert.deepEqual(status?.names, GROUP);
      assert.equal(status?.state, 'valid');
      assert.equal(engine.status().find((s) => s.name === 'solo.test')?.names, undefined);
      assert.equal(engine.statusOf('*.example.test')?.name, 'example.test', 'statusOf by any of its names');
      assert.deepEqual(nameView(status!, []).names, GROUP, 'the admin view shows the names');
    } finally {
      await engine.stop();
    }
  });

  it('an exact managed name inside the wildcard keeps its own certificate', async () => {
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: [GROUP, 'special.example.test'] });
    await engine.start();
    try {
      const special = await engine.getCertificate('special.example.test');
      assert.deepEqual(sans(special.certificatePem), ['special.example.test']);
      assert.deepEqual(sans((await engine.getCertificate('other.example.test')).certificatePem), ['*.example.test', 'example.test']);
    } finally {
      await engine.stop();
    }
  });

  it('renews the group at its renewal time with every name, and forceRenew by any of its names renews it', async () => {
    const clock = new ManualClock();
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' }, validityMs: 90 * DAY });
    // One clock.advance(70 days) moves past the renewal time and on: the attempt's deadline must lie beyond it.
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: [GROUP], clock, attemptTimeout: 365 * DAY });
    const obtained = until(engine, 'cert_obtained', 'example.test');
    await engine.start();
    await obtained;
    const first = (await engine.getCertificate('a.example.test')).meta.fingerprint;
    try {
      const renewed = until(engine, 'cert_renewed', 'example.test');
      clock.advance(70 * DAY); // past 2/3 of the lifetime
      await renewed;
      const second = (await engine.getCertificate('a.example.test')).meta.fingerprint;
      assert.notEqual(second, first, 'the renewed certificate is served for a name its wildcard covers');
      assert.equal((await engine.getCertificate('example.test')).meta.fingerprint, second, 'and for the apex');
      const third = await engine.forceRenew('*.example.test');
      assert.notEqual(third.fingerprint, second);
      assert.equal((await engine.getCertificate('b.example.test')).meta.fingerprint, third.fingerprint);
      assert.equal(issuer.requests.length, 3);
      for (const request of issuer.requests) assert.deepEqual(request.names, GROUP, 'every order carries every name');
      await assert.rejects(engine.forceRenew('a.example.test'), NameNotAllowedError, 'forceRenew takes the certificate\'s own names');
    } finally {
      await engine.stop();
    }
  });

  it('a stored certificate that misses a name of the group (the group grew) is not served: one order for every name replaces it', async () => {
    const storage = await testStorage();
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const single = createCertEngine({ storage, issuers: [issuer], names: ['example.test'] });
    await single.start();
    await single.getCertificate('example.test');
    await single.stop();
    const grouped = createCertEngine({ storage, issuers: [issuer], names: [GROUP] });
    await grouped.start();
    try {
      const served = await grouped.getCertificate('a.example.test');
      assert.deepEqual(sans(served.certificatePem), ['*.example.test', 'example.test']);
      assert.deepEqual(issuer.requests.map((r) => r.names), [['example.test'], GROUP]);
    } finally {
      await grouped.stop();
    }
  });

  it('an issued certificate that misses a name of the group is refused (UnusableCertificateError, reason names), not stored', async () => {
    const storage = await testStorage();
    const inner = scriptedIssuer({ mode: { kind: 'succeed' } });
    const partial: Issuer = { id: 'partial', issue: (request, context) => inner.issue({ ...request, names: request.names.slice(0, 1) }, context) };
    const engine = createCertEngine({ storage, issuers: [partial], names: [GROUP] });
    // Either outcome ends the wait: a certificate accepted despite the missing name fails the assertions below, not the test's time.
    const settled = Promise.race([until(engine, 'cert_failed', 'example.test'), until(engine, 'cert_obtained', 'example.test')]);
    await engine.start();
    try {
      await settled;
      const status = engine.statusOf('example.test');
      assert.equal(status?.state, 'failed-backoff');
      assert.equal(status?.lastError?.type, 'UnusableCertificateError');
      assert.match(status?.lastError?.message ?? '', /does not cover \*\.example\.test$/);
      assert.equal(await storage.load('certificates/example.test.json'), undefined);
    } finally {
      await engine.stop();
    }
  });

  it('a sleeping group (maxLiveActors: 0) is served from memory under all its names', async () => {
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const storage = await testStorage();
    const first = createCertEngine({ storage, issuers: [issuer], names: [GROUP] });
    await first.start();
    await first.getCertificate('example.test');
    await first.stop();
    const engine = createCertEngine({ storage, issuers: [issuer], names: [GROUP], maxLiveActors: 0 });
    await engine.start();
    try {
      await engine.getCertificate('example.test'); // key material in memory
      assert.equal(engine.stats.sleeping, 1);
      const apex = await sni(engine, 'example.test');
      const sub = await sni(engine, 'z.example.test');
      assert.equal(sub.ctx, apex.ctx);
      assert.ok(sub.sync);
      assert.equal(engine.stats.liveActors, 0, 'a handshake does not wake it');
    } finally {
      await engine.stop();
    }
  });

  it('manage() takes groups at run time; a group reusing a name of another certificate is a ConfigError; the same group again is left as it is', async () => {
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['solo.test'] });
    await engine.start();
    try {
      engine.manage([GROUP]);
      assert.deepEqual(sans((await engine.getCertificate('q.example.test')).certificatePem), ['*.example.test', 'example.test']);
      engine.manage([GROUP]);
      engine.manage(['*.example.test']);
      assert.equal(engine.stats.names, 2);
      assert.throws(() => engine.manage([['solo.test', '*.solo.test']]), (e: Error) => e instanceof ConfigError && /already managed/.test(e.message));
      assert.throws(() => engine.manage([['*.example.test', 'x.test']]), ConfigError);
      assert.deepEqual(issuer.requests.map((r) => r.names).sort(), [GROUP, ['solo.test']].sort());
    } finally {
      await engine.stop();
    }
  });

  it('the storage cleaner keeps the group\'s record and drops an expired one left under a name that is now one of its other names', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const storage = memoryStorage({ now: () => clock.now() });
    await installTestCa(storage);
    // *.example.test's own certificate from before it joined the group, expired 20 days ago (past the 14-day grace period).
    const ca = localCaIssuer({ leafValidityMs: 30 * DAY, leafKey: testLeafKey() });
    const old = await ca.issue({ names: ['*.example.test'] }, { storage, signal: new AbortController().signal, logger: pino({ level: 'silent' }), now: () => clock.now() - 50 * DAY });
    await seedCertificate(storage, '*.example.test', old);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, clock, issuers: [issuer], names: [GROUP], sessionTickets: false, random: () => 1 });
    await engine.start();
    try {
      await engine.getCertificate('example.test');
      clock.advance(10 * 60_000); // the cleaner's first check (random() = 1: a few minutes after start)
      await engine._maintenanceSettled();
      assert.ok(await storage.load(keys.storageCleanerRecord), 'the cleaner ran');
      assert.equal(await storage.load(keys.certificate('*.example.test')), undefined, 'the old record under the alias is gone');
      assert.ok(await storage.load(keys.certificate('example.test')), 'the group\'s own record stays');
    } finally {
      await engine.stop();
    }
  });
});

/**
 * The engine's public surface: configuration errors, the handshake path
 * (no I/O, one SecureContext per certificate), deadlines and waiter bounds,
 * forceRenew, status, manage, lifecycle misuse.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { CertificateUnavailableError, ConfigError, EngineStoppedError, HandshakeTimeoutError, NameNotAllowedError, TooManyWaitersError } from '../src/errors.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';
import { countingStorage, interceptStorage } from './helpers/storage-wrap.js';
import { refusalsAsErrors } from './helpers/tls.js';

async function testStorage(): Promise<Storage> {
  const storage = memoryStorage();
  await installTestCa(storage);
  return storage;
}

const sni = (engine: ReturnType<typeof createCertEngine>, name: string) =>
  new Promise<import('node:tls').SecureContext>((resolve, reject) => refusalsAsErrors(engine).SNICallback(name, (err, ctx) => (err ? reject(err) : resolve(ctx!))));

describe('engine configuration', () => {
  it('refuses bad options with ConfigError', () => {
    assert.throws(() => createCertEngine({ issuers: [] }), ConfigError);
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [{ id: 'x' } as never] }), ConfigError);
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()], handshakeTimeout: -1 }), ConfigError);
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()], names: ['a/../b'] }), /invalid|not allowed|character/i);
  });

  it('must be started before use, and refuses use after stop', async () => {
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()] });
    await assert.rejects(engine.getCertificate('a.localhost'), ConfigError);
    await engine.start();
    await engine.stop();
    await assert.rejects(engine.getCertificate('a.localhost'), EngineStoppedError);
    await assert.rejects(engine.start(), EngineStoppedError);
  });

  it('refuses unmanaged names when on-demand is off', async () => {
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer()], names: ['a.localhost'] });
    await engine.start();
    await assert.rejects(engine.getCertificate('b.localhost'), NameNotAllowedError);
    await engine.stop();
  });
});

describe('the handshake path', () => {
  it('serves from memory: no storage call, one SecureContext per certificate, reused', async () => {
    const inner = await testStorage();
    let calls = 0;
    const storage = interceptStorage(inner, { load: (k, next) => (calls++, next(k)), store: (k, v, o) => (calls++, inner.store(k, v, o)) });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: ['a.localhost'] });
    await engine.start();
    await engine.getCertificate('a.localhost');
    const before = calls;
    const first = await sni(engine, 'a.localhost');
    for (let i = 0; i < 100; i++) assert.equal(await sni(engine, 'a.localhost'), first, 'the same SecureContext object');
    assert.equal(await sni(engine, 'A.LOCALHOST.'), first, 'normalised names reach the same context');
    assert.equal(calls, before, 'no storage I/O on the handshake path');
    await engine.stop();
  });

  it('a waiting handshake gives up after handshakeTimeout while the attempt goes on for the others', async () => {
    const clock = new ManualClock();
    const issuer = scriptedIssuer();
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['slow.localhost'], clock, handshakeTimeout: 5000 });
    await engine.start();
    await issuer.untilPending();
    const early = engine.getCertificate('slow.localhost');
    clock.advance(3000);
    const late = engine.getCertificate('slow.localhost');
    await new Promise((r) => setImmediate(r));
    clock.advance(2000); // the first waiter's deadline
    await assert.rejects(early, HandshakeTimeoutError);
    await issuer.succeed();
    const served = await late;
    assert.equal(served.meta.names[0], 'slow.localhost');
    assert.equal(issuer.calls, 1, 'the timeout did not start or cancel an attempt');
    await engine.stop();
  });

  it('each waiter times out at its own deadline (one timer per name, re-armed for the next oldest)', async () => {
    const clock = new ManualClock();
    const issuer = scriptedIssuer();
    // No session-ticket or storage-cleaner timers: the test counts the name's timers.
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['queue.localhost'], clock, handshakeTimeout: 5000, sessionTickets: false, storageCleaner: false });
    await engine.start();
    await issuer.untilPending();
    const settled: number[] = [];
    const waiters = [0, 1, 2].map((i) => {
      const p = engine.getCertificate('queue.localhost').then(
        () => assert.fail('no certificate was issued'),
        (error: unknown) => {
          assert.ok(error instanceof HandshakeTimeoutError);
          settled.push(i);
        },
      );
      return p;
    });
    // Held at 0, then 1000 and 2000 ms later.
    const tick = () => new Promise((r) => setImmediate(r));
    await tick();
    for (const step of [1000, 1000]) {
      clock.advance(step);
      waiters.push(
        engine.getCertificate('queue.localhost').then(
          () => assert.fail('no certificate was issued'),
          () => void settled.push(settled.length + 100),
        ),
      );
    }
    await tick();
    assert.equal(clock.pending <= 3, true, `one deadline timer for the name (plus the attempt's lease and deadline): ${clock.pending}`);
    clock.advanceTo(clock.now() + 3000); // 5000 after the first three
    await tick();
    assert.deepEqual(settled.slice().sort(), [0, 1, 2], 'the first three, held together, time out together');
    clock.advance(1000);
    await tick();
    assert.equal(settled.length, 4, 'the fourth at its own deadline');
    clock.advance(999);
    await tick();
    assert.equal(settled.length, 4, 'the fifth not before its own');
    clock.advance(1);
    await tick();
    assert.equal(settled.length, 5);
    assert.equal(issuer.calls, 1, 'timeouts neither start nor cancel an attempt');
    assert.equal(engine.stats.waitingHandshakes, 0);
    await Promise.all(waiters);
    await engine.stop();
  });

  it('bounds the waiting handshakes per name', async () => {
    const issuer = scriptedIssuer();
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['busy.localhost'], maxWaitersPerName: 3 });
    await engine.start();
    await issuer.untilPending();
    const waiting = [1, 2, 3].map(() => engine.getCertificate('busy.localhost'));
    await assert.rejects(engine.getCertificate('busy.localhost'), TooManyWaitersError);
    await issuer.succeed();
    await Promise.all(waiting);
    await engine.stop();
  });
});

describe('operating', () => {
  it('forceRenew resolves with the new certificate, or rejects with that attempt\'s error; status reports it', async () => {
    const clock = new ManualClock();
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['op.localhost'], clock });
    await engine.start();
    const first = await engine.getCertificate('op.localhost');
    const renewed = await engine.forceRenew('op.localhost');
    assert.notEqual(renewed.fingerprint, first.meta.fingerprint);
    issuer.mode = { kind: 'fail', message: 'CA maintenance' };
    await assert.rejects(engine.forceRenew('op.localhost'), (e: unknown) => e instanceof CertificateUnavailableError && /CA maintenance/.test(e.message));
    const status = engine.status()[0]!;
    assert.equal(status.state, 'failed-backoff');
    assert.equal(status.attempts, 1);
    assert.equal(status.lastError?.message, 'CA maintenance');
    assert.ok(status.nextAttemptAt! > clock.now());
    assert.equal(status.certificate?.fingerprint, renewed.fingerprint, 'the still-valid certificate is kept');
    assert.equal((await engine.getCertificate('op.localhost')).meta.fingerprint, renewed.fingerprint, 'and served during backoff');
    assert.equal(issuer.calls, 3);
    engine.manage(['late.localhost']);
    assert.deepEqual(engine.status().map((s) => s.name).sort(), ['late.localhost', 'op.localhost']);
    await engine.stop();
  });
});

describe('issuer fallback', () => {
  it('tries issuers in order within one attempt and reports each one; all failing keeps every error', async () => {
    const broken = scriptedIssuer({ id: 'broken-ca', mode: { kind: 'fail', message: 'first CA down', retryAfter: Date.now() + 60_000 } });
    const working = scriptedIssuer({ id: 'backup-ca', mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage: await testStorage(), issuers: [broken, working], names: ['fb.localhost'] });
    const reports: Array<{ issuer: string; result: string; errorType?: string }> = [];
    engine.on('issuer_attempt', (e) => reports.push({ issuer: e.issuer, result: e.result, ...(e.errorType ? { errorType: e.errorType } : {}) }));
    await engine.start();
    const served = await engine.getCertificate('fb.localhost');
    assert.equal(served.meta.issuerId, 'backup-ca');
    assert.deepEqual(reports, [{ issuer: 'broken-ca', result: 'failure', errorType: 'IssuanceError' }, { issuer: 'backup-ca', result: 'success' }]);
    assert.deepEqual(engine.issuerIds, ['broken-ca', 'backup-ca']);
    assert.equal(engine.statusOf('FB.localhost')?.certificate?.issuerId, 'backup-ca');
    assert.equal(engine.statusOf('unknown.localhost'), undefined);

    working.mode = { kind: 'fail', message: 'second CA down too' };
    await assert.rejects(engine.forceRenew('fb.localhost'), (e: unknown) => e instanceof CertificateUnavailableError && /first CA down/.test(e.message) && /second CA down too/.test(e.message));
    assert.equal(engine.statusOf('fb.localhost')?.lastError?.type, 'AllIssuersFailedError');
    await engine.stop();
  });
});

describe('loading at scale and under storage trouble', () => {
  it('bounds concurrent storage reads at start, and a failed read is retried by reading, never by ordering', async () => {
    const inner = await testStorage();
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    // A certificate for "stored.localhost" exists; the first read of it fails (storage blip).
    const seeder = createCertEngine({ storage: inner, issuers: [issuer], names: ['stored.localhost'] });
    await seeder.start();
    await seeder.getCertificate('stored.localhost');
    await seeder.stop();
    const ordersBefore = issuer.calls;

    let failFirst = true;
    const blipping = interceptStorage(inner, {
      load: async (key, next) => {
        if (key.includes('stored.localhost') && failFirst) {
          failFirst = false;
          throw new (await import('../src/errors.js')).StorageError('storage blip');
        }
        return next(key);
      },
    });
    const storage = countingStorage(blipping, { delayMs: 2 });
    // From now: the seeded certificate was issued on the real clock (one from the future is not served).
    const clock = new ManualClock(Date.now());
    const names = ['stored.localhost', ...Array.from({ length: 400 }, (_, i) => `n${i}.localhost`)];
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock });
    await engine.start();
    try {
      // 64 loads (2 reads each) plus 32 attempts (2 reads each) at most, not one per name (401 here).
      assert.ok(storage.maxActive <= 192, `storage reads at once bounded, saw ${storage.maxActive}`);
      const blip = engine.statusOf('stored.localhost')!;
      assert.equal(blip.state, 'storage-unreadable', 'our storage failing is not the CA refusing');
      assert.equal(blip.attempts, 0, 'a storage blip is not counted as a CA failure');
      clock.advanceTo(blip.nextAttemptAt!);
      for (let i = 0; i < 50 && engine.statusOf('stored.localhost')!.state !== 'valid'; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(engine.statusOf('stored.localhost')!.state, 'valid', 're-read the stored certificate');
      assert.equal(issuer.calls, ordersBefore, 'no order for a certificate that was in storage all along');
    } finally {
      await engine.stop();
    }
  });
});

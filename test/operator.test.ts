/**
 * Operator actions carry one outcome, like handshakes: `forceRenew` settles
 * with the outcome of the attempt it asked for (or the storage's error, or
 * `stopped`), bounded by a timeout — from every state, storage trouble
 * included. And what a handshake gets from the chart's memoised answers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InspectionEvent } from 'xstate';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { CertificateUnavailableError, EngineStoppedError, OperatorTimeoutError, StorageError } from '../src/errors.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';
import { handshake, startTlsServer } from './helpers/tls.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 2, 1);
const tick = () => new Promise<void>((r) => setImmediate(r));
async function ticks(n = 10) {
  for (let i = 0; i < n; i++) await tick();
}

async function testStorage(): Promise<Storage> {
  const storage = memoryStorage();
  await installTestCa(storage);
  return storage;
}

/** A storage holding a certificate for `name`, obtained from `issuer` (which then issues again, on its next call). */
async function seededWith(name: string, clock: ManualClock) {
  const inner = await testStorage();
  const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
  const seeder = createCertEngine({ storage: inner, issuers: [issuer], names: [name], clock });
  await seeder.start();
  const stored = await seeder.getCertificate(name);
  await seeder.stop();
  return { inner, issuer, stored };
}

/** A storage that can be switched off: every call then fails as an unreachable storage does. */
function switchable(inner: Storage) {
  const state = { down: false };
  const guard = <T>(call: () => Promise<T>) => (state.down ? Promise.reject(new StorageError('storage unreachable')) : call());
  const storage = interceptStorage(inner, { load: (key, next) => guard(() => next(key)), store: (k, v, o) => guard(() => inner.store(k, v, o)) });
  return { storage: { ...storage, lock: (k: string, t: number, o?: { signal?: AbortSignal }) => guard(() => inner.lock(k, t, o)) } as Storage, state };
}

describe('forceRenew settles with the outcome it asked for', () => {
  it('storage down at start: storage-unreadable; forceRenew while down gets the storage error; storage back, forceRenew settles with a new certificate', async () => {
    const clock = new ManualClock(T0);
    const { inner, issuer, stored } = await seededWith('down.localhost', clock);

    const { storage, state } = switchable(inner);
    state.down = true;
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['down.localhost'], clock });
    await engine.start();
    try {
      const status = engine.statusOf('down.localhost')!;
      assert.equal(status.state, 'storage-unreadable');
      assert.equal(status.attempts, 0, 'not counted as an attempt');
      const callsBefore = issuer.calls;

      await assert.rejects(engine.forceRenew('down.localhost'), (e: unknown) => {
        assert.ok(e instanceof CertificateUnavailableError, String(e));
        assert.equal(e.lastError.code, 'ERR_STORAGE', 'the storage error, not a CA error');
        return true;
      });
      assert.equal(engine.statusOf('down.localhost')!.state, 'storage-unreadable');
      assert.equal(issuer.calls, callsBefore, 'no order while storage cannot be read');

      state.down = false;
      const renewed = await engine.forceRenew('down.localhost');
      assert.notEqual(renewed.fingerprint, stored.meta.fingerprint, 'the attempt the operator asked for, not the stored certificate');
      assert.equal(issuer.calls, callsBefore + 1, 'one order');
      assert.equal(engine.statusOf('down.localhost')!.state, 'valid');
      assert.equal((await engine.getCertificate('down.localhost')).meta.fingerprint, renewed.fingerprint);
    } finally {
      await engine.stop();
    }
  });

  it('storage-unreadable reads again on its own after about 5 s, never ordering', async () => {
    const clock = new ManualClock(T0);
    const { inner, issuer } = await seededWith('retry.localhost', clock);
    const { storage, state } = switchable(inner);
    state.down = true;
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['retry.localhost'], clock, random: () => 0.5 });
    await engine.start();
    try {
      const { nextAttemptAt } = engine.statusOf('retry.localhost')!;
      assert.equal(nextAttemptAt, clock.now() + 5000, 'the storage retry: 5 s (jitter ±20 %, here 0)');
      state.down = false;
      clock.advance(4999);
      await ticks();
      assert.equal(engine.statusOf('retry.localhost')!.state, 'storage-unreadable', 'not before its time');
      clock.advance(1);
      await ticks();
      assert.equal(engine.statusOf('retry.localhost')!.state, 'valid', 'read again: the stored certificate');
      assert.equal(issuer.calls, 1, 'only the seeding order');
    } finally {
      await engine.stop();
    }
  });

  it('forceRenew while the name is being read starts the attempt asked for, even when the stored certificate is not due', async () => {
    const clock = new ManualClock(T0);
    const { inner, issuer, stored } = await seededWith('read.localhost', clock);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const storage = interceptStorage(inner, { load: async (key, next) => (await gate, next(key)) });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['read.localhost'], clock });
    const starting = engine.start({ waitForStorage: false });
    await starting;
    try {
      const renewal = engine.forceRenew('read.localhost');
      await ticks();
      assert.equal(engine.statusOf('read.localhost')!.state, 'loading');
      release();
      const renewed = await renewal;
      assert.notEqual(renewed.fingerprint, stored.meta.fingerprint);
      assert.equal(issuer.calls, 2, 'the seeding order and the one asked for');
    } finally {
      await engine.stop();
    }
  });

  it('joins the attempt in flight: one order, every operator gets its outcome; a failure reaches them all', async () => {
    const clock = new ManualClock(T0);
    const issuer = scriptedIssuer();
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['join.localhost'], clock });
    await engine.start();
    try {
      await issuer.untilPending();
      const operators = [engine.forceRenew('join.localhost'), engine.forceRenew('join.localhost'), engine.forceRenew('join.localhost')];
      await ticks();
      await issuer.succeed();
      const got = await Promise.all(operators);
      assert.equal(issuer.calls, 1, 'one order for the start-up attempt and three operators');
      assert.ok(got.every((c) => c.fingerprint === got[0]!.fingerprint));

      const failing = [engine.forceRenew('join.localhost'), engine.forceRenew('join.localhost')];
      await issuer.untilPending();
      issuer.fail('CA maintenance');
      for (const outcome of failing) await assert.rejects(outcome, (e: unknown) => e instanceof CertificateUnavailableError && /CA maintenance/.test(e.message));
      assert.equal(issuer.calls, 2);
      const status = engine.statusOf('join.localhost')!;
      assert.equal(status.state, 'failed-backoff');
    } finally {
      await engine.stop();
    }
  });

  it('an operator that outlives its timeout gets OperatorTimeoutError; the attempt goes on; stop answers the rest', async () => {
    const clock = new ManualClock(T0);
    const issuer = scriptedIssuer();
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['slow.localhost'], clock, operatorTimeout: 60_000 });
    await engine.start();
    await issuer.untilPending();
    const short = engine.forceRenew('slow.localhost', { timeoutMs: 1000 });
    const long = engine.forceRenew('slow.localhost');
    await ticks();
    clock.advance(1000);
    await assert.rejects(short, OperatorTimeoutError);
    assert.equal(issuer.pending, 1, 'the attempt goes on');
    const stopping = engine.stop();
    await assert.rejects(long, EngineStoppedError);
    await stopping;
    assert.equal(clock.pending, 0, 'no operator timer left');
    await assert.rejects(engine.forceRenew('slow.localhost'), EngineStoppedError, 'a rejection, never a synchronous throw');
  });
});

describe('the handshake path', () => {
  it('the peer address of a TLS handshake reaches the on-demand decision', async () => {
    const seen: Array<string | undefined> = [];
    const engine = createCertEngine({
      storage: await testStorage(),
      issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })],
      onDemand: { decide: (_name, info) => (seen.push(info.remoteAddress), true) },
    });
    await engine.start();
    const server = await startTlsServer(engine);
    try {
      const result = await handshake(server.port, 'peer.localhost');
      assert.ok(result.ok, JSON.stringify(result));
      assert.deepEqual(seen, ['127.0.0.1']);
    } finally {
      await server.close();
      await engine.stop();
    }
  });

  it('failed-backoff with a still-valid certificate is answered like valid: synchronously, from memory, no event, no storage call', async () => {
    const clock = new ManualClock(T0);
    const inner = await testStorage();
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' }, validityMs: 90 * DAY });
    let events = 0;
    const inspect = (event: InspectionEvent) => {
      if (event.type === '@xstate.event' && event.event.type === 'HANDSHAKE') events++;
    };
    let storageCalls = 0;
    const storage = interceptStorage(inner, { load: (key, next) => (storageCalls++, next(key)), store: (k, v, o) => (storageCalls++, inner.store(k, v, o)) });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['backoff.localhost'], clock, inspect });
    await engine.start();
    try {
      const first = await engine.getCertificate('backoff.localhost');
      // The CA asks us to wait until after the certificate expires: failed-backoff serves it until then.
      issuer.mode = { kind: 'fail', message: 'CA down', retryAfter: first.meta.notAfter + DAY };
      const expired: string[] = [];
      engine.on('cert_expired', (e) => expired.push(e.certificate.fingerprint));
      await engine.forceRenew('backoff.localhost').catch(() => undefined);
      await ticks();
      assert.equal(engine.statusOf('backoff.localhost')!.state, 'failed-backoff');
      const { SNICallback } = engine.tlsOptions();
      events = 0;
      storageCalls = 0;
      for (let i = 0; i < 100; i++) {
        let answered: boolean | undefined;
        SNICallback('backoff.localhost', (err, ctx) => {
          assert.equal(err, null);
          assert.ok(ctx);
          answered = true;
        });
        assert.equal(answered, true, 'answered before the callback returned');
      }
      assert.equal(events, 0, 'no HANDSHAKE event reached the actor');
      assert.equal(storageCalls, 0, 'no storage call');
      assert.equal((await engine.getCertificate('backoff.localhost')).meta.fingerprint, first.meta.fingerprint, 'the still-valid certificate');

      // At its expiry the chart refuses (serveExpired is off): the memo never serves it expired.
      clock.advanceTo(first.meta.notAfter);
      await ticks();
      assert.deepEqual(expired, [first.meta.fingerprint], 'cert_expired, once, at its expiry');
      assert.equal(engine.statusOf('backoff.localhost')!.state, 'failed-backoff');
      await assert.rejects(engine.getCertificate('backoff.localhost'), (e: unknown) => e instanceof CertificateUnavailableError && /CA down/.test(e.message));
    } finally {
      await engine.stop();
    }
  });
});

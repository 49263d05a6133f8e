/**
 * The seed scenario (the CertMagic bug certstate exists to make impossible),
 * through real TLS connections on loopback: an expired stored certificate,
 * a herd of concurrent handshakes, one attempt, one outcome for all.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import type { InspectionEvent } from 'xstate';
import { actorIdOf } from '../src/admin/inspector.js';
import { createCertEngine } from '../src/engine/engine.js';
import type { Storage } from '../src/types.js';
import { scriptedIssuer, testLeafKey } from './helpers/scripted-issuer.js';
import { handshake, seedCertificate, startTlsServer } from './helpers/tls.js';

const NAME = 'herd.localhost';
const HERD = 1000;
const DAY = 86_400_000;

/** Store a certificate for NAME that expired a week ago. */
async function seedExpired(storage: Storage): Promise<string> {
  const ca = localCaIssuer({ leafValidityMs: DAY, leafKey: testLeafKey() });
  const tenDaysAgo = Date.now() - 10 * DAY;
  const bundle = await ca.issue(
    { names: [NAME] },
    { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => tenDaysAgo },
  );
  await seedCertificate(storage, NAME, bundle);
  return bundle.certificatePem;
}

/** Wait (bounded) until `n` handshakes have reached the SNI callback. */
async function untilAsked(server: { asked: number }, n: number) {
  for (let i = 0; i < 6000 && server.asked < n; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.asked, n, 'every handshake of the herd reached the server');
}

function herd(port: number, n = HERD) {
  return Promise.all(Array.from({ length: n }, () => handshake(port, NAME)));
}

describe('seed scenario: expired certificate, herd of handshakes', () => {
  it('a failing renewal: one attempt, every handshake gets that attempt\'s error, next attempt only after backoff, then the new certificate', async () => {
    const storage = memoryStorage();
    await seedExpired(storage);
    const issuer = scriptedIssuer(); // manual: the test ends the attempt once the whole herd is waiting
    const backoffMs = 8000;
    // What the actor receives and does, in order: a release that recursed (a released handshake
    // asking again, an answer that sends an event back) would show as events and actions after the end.
    const trail: string[] = [];
    const inspect = (e: InspectionEvent) => {
      if (e.type === '@xstate.event' && actorIdOf(e.actorRef) === `cert:${NAME}`) trail.push(`event ${e.event.type}`);
      if (e.type === '@xstate.action' && actorIdOf(e.actorRef) === `cert:${NAME}`) trail.push(`action ${e.action.type}`);
    };
    const engine = createCertEngine({
      storage,
      issuers: [issuer],
      names: [NAME],
      timing: { backoffInitialMs: backoffMs, backoffJitter: 0 },
      handshakeTimeout: 30_000,
      inspect,
    });
    const attempts: number[] = [];
    engine.on('cert_obtaining', () => attempts.push(Date.now()));
    const failures: number[] = [];
    const failed: Array<{ at: number; nextAttemptAt: number }> = [];
    engine.on('cert_failed', (e) => {
      failures.push(Date.now());
      failed.push({ at: e.error.at, nextAttemptAt: e.nextAttemptAt });
    });
    await engine.start();
    const server = await startTlsServer(engine);
    try {
      assert.equal(engine.status()[0]?.state, 'expired-renewing');
      const pending = herd(server.port);
      await untilAsked(server, HERD);
      await issuer.untilPending();
      issuer.fail('CA says no');
      const results = await pending;

      // Exactly one attempt during the herd, and every handshake answered once with its error.
      assert.equal(issuer.calls, 1, 'one issuance attempt for the whole herd');
      assert.equal(server.answers.length, HERD, 'each handshake answered exactly once');
      for (const answer of server.answers) {
        assert.ok(answer.error, 'no certificate to serve');
        assert.match(answer.error.message, /CA says no/);
        assert.equal((answer.error as { name: string }).name, 'CertificateUnavailableError');
      }
      assert.ok(results.every((r) => !r.ok), 'every client saw the handshake refused');
      // Most of the herd arrived while the attempt was in flight, waited, and was answered when it ended.
      const waited = server.answers.filter((a) => a.askedAt < failures[0]!);
      assert.equal(waited.length, HERD, 'the whole herd waited for the attempt');
      assert.ok(waited.every((a) => a.at >= failures[0]!), 'no waiter answered before the attempt ended');
      // No recursion: from the attempt's end until the last of the 1000 answers was delivered, the
      // actor received no event from a handshake or an operator, and released its herd exactly once.
      const ended = trail.indexOf('event xstate.error.actor.attempt');
      assert.ok(ended >= 0, 'the attempt ended');
      const afterEnd = trail.slice(ended + 1);
      assert.deepEqual(afterEnd.filter((t) => /HANDSHAKE|FORCE_RENEW/.test(t)), [], 'no event sent back by a release');
      assert.deepEqual(afterEnd.filter((t) => t === 'action releaseHandshakes'), ['action releaseHandshakes'], 'one release for the whole herd');
      assert.equal(trail.filter((t) => t === 'event HANDSHAKE').length, HERD, 'one event per handshake, each held once');
      assert.equal(engine.status()[0]?.state, 'failed-backoff');

      // During the backoff: answered at once with the recorded error, no new attempt.
      server.answers.length = 0;
      const nextAttemptAt = engine.status()[0]!.nextAttemptAt!;
      const during = await herd(server.port, 200);
      assert.ok(Date.now() < nextAttemptAt, 'the second herd ran inside the backoff window (machine too slow?)');
      assert.ok(during.every((r) => !r.ok));
      assert.equal(issuer.calls, 1, 'no attempt during backoff, whatever the load');
      assert.ok(server.answers.every((a) => a.error && /CA says no/.test(a.error.message)));

      // The CA recovers; the backoff elapses; the next attempt succeeds and handshakes get the new certificate.
      issuer.mode = { kind: 'succeed' };
      const renewed = new Promise<void>((resolve) => engine.on('cert_renewed', () => resolve()));
      await renewed;
      assert.equal(issuer.calls, 2);
      // The failure's own timestamps (the listener runs after the release, whose time would skew a Date.now() here).
      assert.equal(failed[0]!.nextAttemptAt - failed[0]!.at, backoffMs, 'the backoff decided at the failure');
      assert.ok(attempts[1]! >= failed[0]!.nextAttemptAt - 2, `second attempt ${failed[0]!.nextAttemptAt - attempts[1]!} ms before the backoff ended`);
      const after = await herd(server.port, 50);
      const status = engine.status()[0]!;
      assert.equal(status.state, 'valid');
      for (const r of after) {
        assert.ok(r.ok, 'handshake succeeds with the new certificate');
        assert.equal(r.fingerprint, status.certificate!.fingerprint);
        assert.ok(r.notAfter > Date.now());
      }
    } finally {
      await server.close();
      await engine.stop();
    }
  });

  it('a successful renewal: one attempt, every waiting handshake gets the new certificate', async () => {
    const storage = memoryStorage();
    await seedExpired(storage);
    const issuer = scriptedIssuer();
    const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME] });
    await engine.start();
    const server = await startTlsServer(engine);
    try {
      let renewedAt = 0;
      engine.on('cert_renewed', () => (renewedAt = Date.now()));
      const pending = herd(server.port);
      await untilAsked(server, HERD);
      await issuer.untilPending();
      await issuer.succeed();
      const results = await pending;
      assert.equal(issuer.calls, 1, 'one issuance attempt for the whole herd');
      assert.equal(server.answers.length, HERD);
      const waited = server.answers.filter((a) => a.askedAt < renewedAt);
      assert.equal(waited.length, HERD, 'the whole herd waited for the renewal');
      assert.ok(waited.every((a) => a.at >= renewedAt), 'no waiter answered before the renewal ended');
      assert.ok(server.answers.every((a) => !a.error));
      const { certificate } = engine.status()[0]!;
      assert.ok(certificate && certificate.notAfter > Date.now());
      for (const r of results) {
        assert.ok(r.ok);
        assert.equal(r.fingerprint, certificate.fingerprint, 'every handshake got the renewed certificate');
      }
    } finally {
      await server.close();
      await engine.stop();
    }
  });
});

/**
 * The numbers of renewal and backoff, pinned: exact values (written out, not
 * recomputed by the formula under test) over consecutive failures with a
 * non-trivial random draw, the 6 h cap, the CA's Retry-After shorter and
 * longer than the backoff, the 10-day boundary of short-lived certificates;
 * then the same backoff sequence through the engine's public API with a
 * seeded random source (status, events and the persisted failure record).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { parseFailureRecord } from '../src/engine/stored.js';
import { defaultTimingPolicy, nextAttemptTime, renewalTime } from '../src/machines/policy.js';
import { keys } from '../src/storage-keys.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';
import { seeded } from './helpers/seeded-random.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const NOW = Date.UTC(2026, 3, 1);

describe('backoff (policy.nextAttemptTime)', () => {
  // Backoff after the n-th consecutive failure, for a draw r: 1 min × 10^(n−1), capped at 6 h, times (0.8 + 0.4 r).
  const table: Array<[r: number, delays: number[]]> = [
    [0, [48_000, 480_000, 4_800_000, 17_280_000, 17_280_000, 17_280_000]],
    [0.25, [54_000, 540_000, 5_400_000, 19_440_000, 19_440_000, 19_440_000]],
    [0.9, [69_600, 696_000, 6_960_000, 25_056_000, 25_056_000, 25_056_000]],
    [0.999_999, [71_999.976, 719_999.76, 7_199_997.6, 25_919_991.36, 25_919_991.36, 25_919_991.36].map(Math.round)],
  ];
  it('grows ×10 per consecutive failure, jittered ±20 %, capped at 6 h from the fourth failure', () => {
    for (const [r, delays] of table) {
      const got = delays.map((_, i) => nextAttemptTime(NOW, i + 1, r, undefined, defaultTimingPolicy) - NOW);
      assert.deepEqual(got, delays, `r = ${r}`);
    }
    // Without jitter the cap is exactly 6 h.
    assert.equal(nextAttemptTime(NOW, 4, 0.5, undefined) - NOW, 6 * HOUR);
    assert.equal(nextAttemptTime(NOW, 40, 0.5, undefined) - NOW, 6 * HOUR);
    // A failure count below 1 counts as the first.
    assert.equal(nextAttemptTime(NOW, 0, 0.5, undefined) - NOW, MIN);
  });

  it("takes the CA's Retry-After as a floor: a later one wins, an earlier one does not shorten the backoff", () => {
    assert.equal(nextAttemptTime(NOW, 1, 0.25, NOW + 2 * HOUR), NOW + 2 * HOUR, 'longer than the backoff');
    assert.equal(nextAttemptTime(NOW, 1, 0.25, NOW + 1000), NOW + 54_000, 'shorter than the backoff');
    assert.equal(nextAttemptTime(NOW, 1, 0.25, NOW + 54_000), NOW + 54_000, 'equal');
    assert.equal(nextAttemptTime(NOW, 4, 0.25, NOW + 7 * HOUR), NOW + 7 * HOUR, 'longer than the cap');
  });

  it('follows the policy it is given', () => {
    const policy = { ...defaultTimingPolicy, backoffInitialMs: 1000, backoffFactor: 2, backoffMaxMs: 5000, backoffJitter: 0 };
    assert.deepEqual([1, 2, 3, 4].map((n) => nextAttemptTime(NOW, n, 0.9, undefined, policy) - NOW), [1000, 2000, 4000, 5000]);
  });
});

describe('renewal time (policy.renewalTime)', () => {
  const cert = (lifetime: number) => ({ notBefore: NOW, notAfter: NOW + lifetime });
  it('renews at 2/3 of the lifetime minus up to 5 % of it at random', () => {
    assert.equal(renewalTime(cert(90 * DAY), 0) - NOW, 60 * DAY);
    assert.equal(renewalTime(cert(90 * DAY), 0.5) - NOW, 60 * DAY - 2.25 * DAY);
    assert.equal(renewalTime(cert(90 * DAY), 0.999_999) - NOW, Math.round(60 * DAY - 4.5 * DAY * 0.999_999));
  });
  it('short-lived (under 10 days) at 1/2; exactly 10 days is not short-lived', () => {
    assert.equal(renewalTime(cert(10 * DAY), 0) - NOW, Math.round((10 * DAY * 2) / 3), 'exactly 10 days: 2/3');
    assert.equal(renewalTime(cert(10 * DAY - 1), 0) - NOW, Math.round((10 * DAY - 1) / 2), 'one ms less: 1/2');
    assert.equal(renewalTime(cert(6 * DAY), 0.5) - NOW, 3 * DAY - 0.15 * DAY);
  });
  it('a certificate whose notAfter precedes its notBefore renews at once (at notBefore), never in its past', () => {
    assert.equal(renewalTime({ notBefore: NOW, notAfter: NOW - DAY }, 0.5), NOW);
  });
});

/** An attempt is pending, or the test fails fast (a chart that never starts one must not hang the run). */
async function attemptPending(issuer: { untilPending(n?: number): Promise<void> }) {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([issuer.untilPending(1), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no attempt started')), 5000)))]).finally(() => clearTimeout(timer));
}

describe('backoff through the engine, with a seeded random source', () => {
  it('six consecutive failures: status, cert_failed and the persisted record carry 1 min, 10 min, 100 min, then 6 h, each jittered by its draw', async () => {
    const name = 'backoff.localhost';
    const clock = new ManualClock(NOW);
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = scriptedIssuer();
    const source = seeded(20_261_207);
    const draws: number[] = [];
    const random = () => {
      const r = source();
      draws.push(r);
      return r;
    };
    const engine = createCertEngine({ storage, issuers: [issuer], names: [name], clock, random, storageCleaner: false });
    const failed: Array<{ attempts: number; nextAttemptAt: number; draw: number; at: number }> = [];
    // The draw of a failure is the last one taken when cert_failed is emitted (recordFailure, then emitFailed, in one transition).
    engine.on('cert_failed', (e) => failed.push({ attempts: e.attempts, nextAttemptAt: e.nextAttemptAt, draw: draws.at(-1)!, at: clock.now() }));
    const obtaining: number[] = [];
    engine.on('cert_obtaining', (e) => obtaining.push(e.attempt));
    try {
      await engine.start();
      const bases = [MIN, 10 * MIN, 100 * MIN, 6 * HOUR, 6 * HOUR, 6 * HOUR];
      for (const [i, base] of bases.entries()) {
        await attemptPending(issuer);
        assert.equal(engine.status()[0]!.nextAttemptAt, undefined, 'no backoff shown while an attempt runs');
        issuer.fail(`refused #${i + 1}`);
        for (let t = 0; t < 50 && failed.length <= i; t++) await new Promise((r) => setImmediate(r));
        const f = failed[i]!;
        assert.equal(f.attempts, i + 1, 'consecutive failures counted');
        assert.notEqual(f.draw, 0.5, 'a non-trivial draw');
        assert.equal(f.nextAttemptAt, f.at + Math.round(base * (0.8 + 0.4 * f.draw)), `failure ${i + 1}: ${base / MIN} min ±20 %`);
        const status = engine.status()[0]!;
        assert.equal(status.state, 'failed-backoff');
        assert.equal(status.nextAttemptAt, f.nextAttemptAt);
        for (let t = 0; t < 50; t++) {
          const stored = await storage.load(keys.failure(name));
          if (stored && parseFailureRecord('f', stored).attempts === i + 1) break;
          await new Promise((r) => setImmediate(r));
        }
        const record = parseFailureRecord('f', (await storage.load(keys.failure(name)))!);
        assert.equal(record.attempts, i + 1, 'persisted');
        assert.equal(record.nextAttemptAt, f.nextAttemptAt, 'persisted with its time');
        // Nothing before the backoff ends; the next attempt right at its end.
        clock.advanceTo(f.nextAttemptAt - 1);
        await new Promise((r) => setImmediate(r));
        assert.equal(issuer.calls, i + 1, 'no attempt before the backoff ends');
        clock.advanceTo(f.nextAttemptAt);
      }
      await attemptPending(issuer);
      assert.deepEqual(obtaining, [1, 2, 3, 4, 5, 6, 7]);
    } finally {
      await engine.stop();
    }
  });
});

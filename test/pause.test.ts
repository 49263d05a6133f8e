/**
 * On-demand pausing (src/machines/pause.ts), pinned at its edges: failing for
 * exactly `pauseAfterMs` pauses, one ms less does not; a name with a usable
 * certificate, a managed name (no `pauseAfterMs`) and a name not failing never
 * pause; the failing streak's start is kept across failures and read back from
 * records old and new. Pure functions, no actor: milliseconds (in the mutation
 * set). Through the chart: test/oracle.test.ts (on-demand names); through the
 * engine: test/on-demand-budget.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { failingSinceAfterFailure, failingSinceOf, isPaused } from '../src/machines/pause.js';
import type { CertificateMeta } from '../src/types.js';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 6, 1);
const cert = (notAfter: number): CertificateMeta => ({ fingerprint: `f${notAfter}`, serial: '01', names: ['pause.localhost'], notBefore: notAfter - 90 * DAY, notAfter, issuer: 'CN=test', issuerId: 'test' });

describe('isPaused', () => {
  const pauseAfterMs = 3 * DAY;

  it('pauses after failing for exactly pauseAfterMs with nothing to serve; one ms less, not yet', () => {
    assert.equal(isPaused({ pauseAfterMs, failingSince: NOW - 3 * DAY }, NOW), true);
    assert.equal(isPaused({ pauseAfterMs, failingSince: NOW - 3 * DAY + 1 }, NOW), false);
    assert.equal(isPaused({ pauseAfterMs, failingSince: NOW - 10 * DAY }, NOW), true);
    assert.equal(isPaused({ pauseAfterMs: 1000, failingSince: NOW - 1000 }, NOW), true, 'the pause it is given');
    assert.equal(isPaused({ pauseAfterMs: 1000, failingSince: NOW - 999 }, NOW), false);
  });

  it('a name that still serves a certificate keeps renewing; an expired one (expired at notAfter exactly) pauses', () => {
    const failingSince = NOW - 4 * DAY;
    assert.equal(isPaused({ pauseAfterMs, failingSince, certificate: cert(NOW + 1) }, NOW), false);
    assert.equal(isPaused({ pauseAfterMs, failingSince, certificate: cert(NOW) }, NOW), true);
    assert.equal(isPaused({ pauseAfterMs, failingSince, certificate: cert(NOW - DAY) }, NOW), true);
  });

  it('never pauses a managed name (no pauseAfterMs) or a name that is not failing (no failingSince)', () => {
    assert.equal(isPaused({ failingSince: NOW - 400 * DAY }, NOW), false);
    assert.equal(isPaused({ pauseAfterMs }, NOW), false);
    assert.equal(isPaused({ pauseAfterMs: 0 }, NOW), false, 'not failing: not paused, even with no pause at all');
    assert.equal(isPaused({}, NOW), false);
  });
});

describe('the failing streak', () => {
  it('starts at the first failure and is kept by the next ones', () => {
    assert.equal(failingSinceAfterFailure({}, NOW), NOW);
    assert.equal(failingSinceAfterFailure({ failingSince: NOW - DAY }, NOW), NOW - DAY);
  });

  it('is read back from a failure record; a record written before it was kept: the last error of a counted failure', () => {
    assert.equal(failingSinceOf(undefined), undefined);
    assert.equal(failingSinceOf({ attempts: 3, failingSince: NOW - 2 * DAY, lastError: { at: NOW - 1 } }), NOW - 2 * DAY);
    assert.equal(failingSinceOf({ attempts: 0, failingSince: NOW - 2 * DAY }), NOW - 2 * DAY);
    assert.equal(failingSinceOf({ attempts: 1, lastError: { at: NOW - 5 } }), NOW - 5);
    assert.equal(failingSinceOf({ attempts: 1 }), undefined, 'counted, but nothing says when');
    // No counted failure (a floor or storage record): not failing.
    assert.equal(failingSinceOf({ attempts: 0, lastError: { at: NOW - 5 } }), undefined);
    assert.equal(failingSinceOf({ attempts: 0 }), undefined);
  });
});

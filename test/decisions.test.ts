/**
 * The chart's guards and context updates (src/machines/decisions.ts) as
 * functions, each pinned with numbers written out at its edges: a renewal
 * due exactly now, a backoff ending exactly now, another certificate valid
 * within the clock skew or expiring now, an ARI "renew now" once per
 * certificate, what a load adopts (a certificate not valid yet, a record with
 * and without orders, a woken name's renewal time), what a success, a
 * failure (the CA's, our storage's, the cluster's floor) and the floor record,
 * the attempt's input and `cert_obtaining`. Every update is compared whole,
 * so a key added or dropped fails too. No actor: milliseconds (in the
 * mutation set). The chart's wiring of these is test/oracle.test.ts's.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IssuanceError, IssuanceFloorError, StorageError, toErrorInfo } from '../src/errors.js';
import type { CertificateContext } from '../src/machines/certificate-io.js';
import { attemptReason, chartDecisions } from '../src/machines/decisions.js';
import { withOrdersPlaced } from '../src/machines/floor.js';
import { defaultTimingPolicy, type TimingPolicy } from '../src/machines/policy.js';
import type { CertificateMeta } from '../src/types.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const NOW = Date.UTC(2026, 6, 1);
const NAME = 'decide.localhost';
/** Small, distinct numbers, so a decision that read the wrong field (or a default) shows. */
const P: TimingPolicy = { ...defaultTimingPolicy, storageRetryMs: 10_000, clockSkewMs: 3 * MIN, minRenewalIntervalMs: 7 * MIN, maxOrdersPerWindow: 3, orderWindowMs: HOUR };
/** Every draw: 0.25 (backoff ×0.9, storage retry ×0.9, renewal 1.25 % of the lifetime early). */
const R = 0.25;
const decide = chartDecisions({ now: () => NOW, random: () => R, policy: P });

let serial = 0;
const cert = (notBefore: number, notAfter: number): CertificateMeta => ({
  fingerprint: `F${++serial}`,
  serial: String(serial),
  names: [NAME],
  notBefore,
  notAfter,
  issuer: 'CN=test',
  issuerId: 'test',
});
const context = (fields: Partial<CertificateContext> = {}): CertificateContext => ({ name: NAME, attempts: 0, attemptSeq: 0, serveExpired: false, forced: false, ...fields });

describe('guards', () => {
  const usable = cert(NOW - DAY, NOW + 1);
  const expiring = cert(NOW - DAY, NOW);

  it('the certificate in hand: usable until its notAfter, expired at it', () => {
    assert.equal(decide.kind(context({ certificate: usable })), 'usable');
    assert.equal(decide.kind(context({ certificate: expiring })), 'expired');
    assert.equal(decide.hasUsableCertificate(context({ certificate: usable })), true);
    assert.equal(decide.hasUsableCertificate(context({ certificate: expiring })), false);
    assert.equal(decide.hasUsableCertificate(context()), false);
    assert.equal(decide.hasCertificate(context({ certificate: expiring })), true);
    assert.equal(decide.hasCertificate(context({ certificate: usable })), true);
    assert.equal(decide.hasCertificate(context()), false);
  });

  it('renewal due from its time exactly; never without one', () => {
    assert.equal(decide.renewalDue(context({ renewAt: NOW })), true);
    assert.equal(decide.renewalDue(context({ renewAt: NOW - DAY })), true);
    assert.equal(decide.renewalDue(context({ renewAt: NOW + 1 })), false);
    assert.equal(decide.renewalDue(context()), false);
  });

  it('a backoff is pending until its time exactly; none without one', () => {
    assert.equal(decide.backoffPending(context({ nextAttemptAt: NOW + 1 })), true);
    assert.equal(decide.backoffPending(context({ nextAttemptAt: NOW })), false);
    assert.equal(decide.backoffPending(context({ nextAttemptAt: NOW - DAY })), false);
    assert.equal(decide.backoffPending(context()), false);
  });

  it('the floor holds from maxOrdersPerWindow orders inside the window', () => {
    assert.equal(decide.floorHolds(context()), false);
    assert.equal(decide.floorHolds(context({ orders: [NOW - 50 * MIN, NOW - MIN] })), false);
    assert.equal(decide.floorHolds(context({ orders: [NOW - 50 * MIN, NOW - 2 * MIN, NOW - MIN] })), true);
    assert.equal(decide.floorHolds(context({ orders: [NOW - HOUR, NOW - 2 * MIN, NOW - MIN] })), false, 'one order exactly a window old');
  });

  it('another usable certificate in storage: another fingerprint, not expired, valid within the clock skew', () => {
    const mine = context({ certificate: usable });
    assert.equal(decide.isAnotherUsableCertificate(mine, usable), false, 'the same certificate');
    assert.equal(decide.isAnotherUsableCertificate(mine, cert(NOW - DAY, NOW + 1)), true);
    assert.equal(decide.isAnotherUsableCertificate(mine, cert(NOW - DAY, NOW)), false, 'expiring now');
    assert.equal(decide.isAnotherUsableCertificate(mine, cert(NOW + 3 * MIN, NOW + DAY)), true, 'ahead by the clock skew exactly');
    assert.equal(decide.isAnotherUsableCertificate(mine, cert(NOW + 3 * MIN + 1, NOW + DAY)), false, 'ahead by more');
    assert.equal(decide.isAnotherUsableCertificate(context(), cert(NOW - DAY, NOW + DAY)), true, 'none in hand');
  });

  it('ARI: a window in the future always; one not in the future ("renew now") once per certificate', () => {
    const c = context({ certificate: usable });
    assert.equal(decide.acceptsRenewalInfo(c, NOW + 1), true);
    assert.equal(decide.acceptsRenewalInfo(c, NOW), true);
    const honoured = context({ certificate: usable, ariNowFor: usable.fingerprint });
    assert.equal(decide.acceptsRenewalInfo(honoured, NOW), false, 'renew now, again for the same certificate');
    assert.equal(decide.acceptsRenewalInfo(honoured, NOW - HOUR), false);
    assert.equal(decide.acceptsRenewalInfo(honoured, NOW + 1), true, 'a future window still moves it');
    assert.equal(decide.acceptsRenewalInfo(context({ certificate: usable, ariNowFor: 'another' }), NOW), true);
    // No certificate in hand (the chart asks only in valid): a future window, but no "renew now" for nothing.
    assert.equal(decide.acceptsRenewalInfo(context(), NOW + 1), true);
    assert.equal(decide.acceptsRenewalInfo(context(), NOW), false);
  });

  it('paused: an on-demand name failing for pauseAfterMs with nothing usable', () => {
    assert.equal(decide.paused(context({ pauseAfterMs: DAY, failingSince: NOW - DAY })), true);
    assert.equal(decide.paused(context({ pauseAfterMs: DAY, failingSince: NOW - DAY + 1 })), false);
    assert.equal(decide.paused(context({ pauseAfterMs: DAY, failingSince: NOW - DAY, certificate: usable })), false);
  });

  it('why an attempt runs, by the certificate in hand', () => {
    assert.equal(attemptReason('none'), 'obtain');
    assert.equal(attemptReason('usable'), 'renew');
    assert.equal(attemptReason('expired'), 'expired');
  });
});

describe('what a load adopts', () => {
  it('nothing stored: nothing in hand, the consecutive failures so far kept', () => {
    assert.deepEqual(decide.adoptStored(context({ attempts: 4, orders: [NOW - MIN], failingSince: NOW - DAY }), {}), {
      certificate: undefined,
      renewAt: undefined,
      attempts: 4,
      lastError: undefined,
      nextAttemptAt: undefined,
      orders: undefined,
      failingSince: undefined,
    });
  });

  it('a certificate without a record: its renewal time drawn; it stands for an order at its notBefore while inside the window', () => {
    // 30 days: renew at 2/3 (20 days) minus 5 % × 0.25 of the lifetime (0.375 days).
    const fresh = cert(NOW - 30 * MIN, NOW - 30 * MIN + 30 * DAY);
    assert.deepEqual(decide.adoptStored(context(), { certificate: fresh }), {
      certificate: fresh,
      renewAt: NOW - 30 * MIN + 19.625 * DAY,
      attempts: 0,
      lastError: undefined,
      nextAttemptAt: undefined,
      orders: [NOW - 30 * MIN],
      failingSince: undefined,
    });
    const old = cert(NOW - DAY, NOW - DAY + 30 * DAY);
    assert.equal(decide.adoptStored(context(), { certificate: old }).orders, undefined, 'ordered before the window');
  });

  it('a woken name keeps the renewal time it drew, floored after its last order', () => {
    const woken = cert(NOW - DAY, NOW + 89 * DAY);
    assert.equal(decide.adoptStored(context(), { certificate: woken, renewAt: NOW + 5 * DAY }).renewAt, NOW + 5 * DAY);
    const update = decide.adoptStored(context(), { certificate: woken, renewAt: NOW + MIN, failure: { attempts: 0, orders: [NOW - MIN] } });
    assert.equal(update.renewAt, NOW + 6 * MIN, '7 min after the last order');
    assert.deepEqual(update.orders, [NOW - MIN]);
  });

  it('a certificate ahead of our clock by more than the skew counts as none; by exactly the skew, it is in hand (no order of ours yet)', () => {
    const ahead = cert(NOW + 3 * MIN + 1, NOW + 90 * DAY);
    const update = decide.adoptStored(context(), { certificate: ahead });
    assert.equal(update.certificate, undefined);
    assert.equal(update.renewAt, undefined);
    assert.equal(update.orders, undefined);
    const within = cert(NOW + 3 * MIN, NOW + 3 * MIN + 30 * DAY);
    const adopted = decide.adoptStored(context(), { certificate: within });
    assert.equal(adopted.certificate, within);
    assert.equal(adopted.renewAt, NOW + 3 * MIN + 19.625 * DAY);
    assert.equal(adopted.orders, undefined);
  });

  it("a failure record: its backoff, error, failures and streak; its orders (the window's only) rather than the certificate's", () => {
    const lastError = { type: 'IssuanceError', message: 'stored', at: NOW - 5 * MIN };
    const fresh = cert(NOW - 30 * MIN, NOW - 30 * MIN + 30 * DAY);
    const failure = { attempts: 2, lastError, nextAttemptAt: NOW + 9 * MIN, orders: [NOW - 2 * HOUR, NOW - 20 * MIN, NOW - 40 * MIN], failingSince: NOW - 3 * HOUR };
    assert.deepEqual(decide.adoptStored(context({ attempts: 7 }), { certificate: fresh, failure }), {
      certificate: fresh,
      renewAt: NOW - 30 * MIN + 19.625 * DAY,
      attempts: 2,
      lastError,
      nextAttemptAt: NOW + 9 * MIN,
      orders: [NOW - 40 * MIN, NOW - 20 * MIN],
      failingSince: NOW - 3 * HOUR,
    });
    // A record that says no orders: none, whatever the certificate; a record without the field: the certificate's.
    assert.equal(decide.adoptStored(context(), { certificate: fresh, failure: { attempts: 1, orders: [] } }).orders, undefined);
    assert.deepEqual(decide.adoptStored(context(), { certificate: fresh, failure: { attempts: 1 } }).orders, [NOW - 30 * MIN]);
    // A record written before the streak was kept: its last error's time.
    assert.equal(decide.adoptStored(context(), { failure: { attempts: 1, lastError } }).failingSince, NOW - 5 * MIN);
  });
});

describe('what a success adopts', () => {
  // 10 minutes, short-lived: renew at 1/2 (5 min) minus 5 % × 0.25 of the lifetime (7.5 s).
  const issued = cert(NOW, NOW + 10 * MIN);
  const reset = { attempts: 0, lastError: undefined, nextAttemptAt: undefined, forced: false, failingSince: undefined };
  const failing = context({ attempts: 3, lastError: { type: 'X', message: 'x', at: NOW - 1 }, nextAttemptAt: NOW + HOUR, forced: true, failingSince: NOW - DAY, orders: [NOW - 2 * HOUR, NOW - 30 * MIN] });

  it('an issued certificate: one order at least, its renewal floored after it; the failing streak over', () => {
    assert.deepEqual(decide.adoptIssued(failing, { certificate: issued, adopted: false }), {
      certificate: issued,
      renewAt: NOW + 7 * MIN,
      orders: [NOW - 30 * MIN, NOW],
      ...reset,
    });
    assert.deepEqual(decide.adoptIssued(failing, { certificate: issued, adopted: false, ordered: 2 }).orders, [NOW - 30 * MIN, NOW, NOW], 'a fallback issuer: two');
    assert.deepEqual(decide.adoptIssued(failing, { certificate: issued, adopted: false, ordered: 0 }).orders, [NOW - 30 * MIN, NOW], 'never fewer than one');
  });

  it('an adopted certificate (another process issued it): no order of ours', () => {
    const long = cert(NOW - MIN, NOW - MIN + 30 * DAY);
    assert.deepEqual(decide.adoptIssued(failing, { certificate: long, adopted: true, ordered: 3 }), {
      certificate: long,
      renewAt: NOW - MIN + 19.625 * DAY,
      orders: [NOW - 30 * MIN],
      ...reset,
    });
    assert.deepEqual(decide.adoptIssued(context(), { certificate: issued, adopted: true }), { certificate: issued, renewAt: NOW + 5 * MIN - 7_500, orders: undefined, ...reset });
  });

  it("another process's certificate from storage: no order of ours, the window's orders kept", () => {
    assert.deepEqual(decide.adoptChanged(failing, issued), { certificate: issued, renewAt: NOW + 5 * MIN - 7_500, orders: [NOW - 30 * MIN], ...reset });
    assert.deepEqual(decide.adoptChanged(context({ orders: [NOW - 3 * MIN] }), issued).renewAt, NOW + 5 * MIN - 7_500, 'floored 7 min after that order: later still');
    assert.deepEqual(decide.adoptChanged(context({ orders: [NOW - MIN] }), issued).renewAt, NOW + 6 * MIN);
  });

  it('an ARI renewal time: floored after the last order; "renew now" (not in the future) remembered for this certificate', () => {
    const c = cert(NOW - DAY, NOW + 89 * DAY);
    // A window ahead changes the time only: ariNowFor is not in the update, so the context keeps its own ('older').
    assert.deepEqual(decide.setRenewAt(context({ certificate: c, ariNowFor: 'older' }), NOW + DAY), { renewAt: NOW + DAY });
    assert.deepEqual(decide.setRenewAt(context({ certificate: c, ariNowFor: 'older' }), NOW + 1), { renewAt: NOW + 1 });
    assert.deepEqual(decide.setRenewAt(context({ certificate: c }), NOW), { renewAt: NOW, ariNowFor: c.fingerprint });
    assert.deepEqual(decide.setRenewAt(context({ certificate: c, orders: [NOW - 2 * MIN] }), NOW - HOUR), { renewAt: NOW + 5 * MIN, ariNowFor: c.fingerprint });
    assert.deepEqual(decide.setRenewAt(context(), NOW), { renewAt: NOW, ariNowFor: undefined }, 'no certificate: nothing to remember');
  });
});

describe('what a failure records', () => {
  const refused = new IssuanceError('refused');

  it("the CA's: counted, backed off 1 min × 0.9 (the draw), the streak starting now", () => {
    assert.deepEqual(decide.recordFailure(context(), refused), {
      attempts: 1,
      lastError: { type: 'IssuanceError', message: 'refused', code: 'ERR_ISSUANCE', at: NOW },
      nextAttemptAt: NOW + 54_000,
      orders: undefined,
      forced: false,
      failingSince: NOW,
    });
  });

  it('the second failure: 10 min × 0.9, the streak kept; the orders it placed counted; a floor ending sooner does not shorten the backoff', () => {
    const c = context({ attempts: 1, failingSince: NOW - DAY, forced: true, orders: [NOW - 58 * MIN, NOW - 40 * MIN] });
    assert.deepEqual(decide.recordFailure(c, withOrdersPlaced(new IssuanceError('refused'), 1)), {
      attempts: 2,
      lastError: { type: 'IssuanceError', message: 'refused', code: 'ERR_ISSUANCE', at: NOW },
      nextAttemptAt: NOW + 540_000,
      orders: [NOW - 58 * MIN, NOW - 40 * MIN, NOW],
      forced: false,
      failingSince: NOW - DAY,
    });
  });

  it('a floor ending later than the backoff: no attempt before the floor lets one', () => {
    const c = context({ orders: [NOW - 50 * MIN, NOW - 40 * MIN] });
    const update = decide.recordFailure(c, withOrdersPlaced(new IssuanceError('refused'), 1));
    assert.equal(update.nextAttemptAt, NOW + 10 * MIN, 'the oldest of the last 3 orders leaves the window');
    assert.deepEqual(update.orders, [NOW - 50 * MIN, NOW - 40 * MIN, NOW]);
    assert.equal(update.attempts, 1);
  });

  it("the CA's Retry-After beyond the backoff wins", () => {
    const limited = new IssuanceError('slow down', { retryAfter: NOW + 2 * HOUR });
    assert.equal(decide.recordFailure(context(), limited).nextAttemptAt, NOW + 2 * HOUR);
  });

  it('our storage failing: retried in 10 s × 0.9, not counted, no streak; orders placed still counted', () => {
    const c = context({ attempts: 2, failingSince: NOW - DAY, forced: true, orders: [NOW - 2 * HOUR, NOW - 10 * MIN] });
    assert.deepEqual(decide.recordFailure(c, withOrdersPlaced(new StorageError('down'), 1)), {
      lastError: toErrorInfo(new StorageError('down'), NOW),
      nextAttemptAt: NOW + 9_000,
      orders: [NOW - 10 * MIN, NOW],
      forced: false,
    });
  });

  it("the cluster's floor (another process's orders): wait for it, not counted", () => {
    const floor = new IssuanceFloorError(NAME, 3, HOUR, NOW + 30 * MIN);
    assert.deepEqual(decide.recordFailure(context({ attempts: 2, forced: true }), floor), {
      lastError: toErrorInfo(floor, NOW),
      nextAttemptAt: NOW + 30 * MIN,
      orders: undefined,
      forced: false,
    });
    // Without a time to wait for, it is counted like any failure.
    const bare = Object.assign(new Error('floor'), { code: 'ERR_ISSUANCE_FLOOR' });
    assert.equal(decide.recordFailure(context(), bare).attempts, 1);
    assert.equal(decide.recordFailure(context(), bare).nextAttemptAt, NOW + 54_000);
  });

  it('storage unreadable: read again in 10 s × 0.9, nothing counted', () => {
    assert.deepEqual(decide.recordStorageFailure(new StorageError('down')), { lastError: toErrorInfo(new StorageError('down'), NOW), nextAttemptAt: NOW + 9_000, forced: false });
  });

  it('the floor holding at routing: its error and time, the recent orders; nothing counted', () => {
    const c = context({ attempts: 2, orders: [NOW - 2 * HOUR, NOW - 50 * MIN, NOW - 20 * MIN, NOW - MIN] });
    const update = decide.recordFloor(c);
    assert.deepEqual(update, {
      lastError: {
        type: 'IssuanceFloorError',
        message: `3 orders for ${NAME} within 60 min: no order before ${new Date(NOW + 10 * MIN).toISOString()}`,
        code: 'ERR_ISSUANCE_FLOOR',
        retryAfter: NOW + 10 * MIN,
        at: NOW,
      },
      nextAttemptAt: NOW + 10 * MIN,
      orders: [NOW - 50 * MIN, NOW - 20 * MIN, NOW - MIN],
    });
    // Asked while the floor does not hold (the chart never does): no wait.
    const open = decide.recordFloor(context());
    assert.equal(open.nextAttemptAt, NOW);
    assert.equal(open.orders, undefined);
  });
});

describe('what an attempt is told, and what it says it is', () => {
  const usable = cert(NOW - DAY, NOW + DAY);

  it('its input: the name, what it replaces and why; Retry-After per issuer, recent orders and the operator only when there are', () => {
    assert.deepEqual(decide.attemptInput(context()), { name: NAME, current: undefined, reason: 'obtain' });
    const busy = context({
      certificate: usable,
      forced: true,
      orders: [NOW - 2 * HOUR, NOW - MIN],
      lastError: { type: 'X', message: 'x', at: NOW - 1, issuerRetryAfter: { primary: NOW + HOUR } },
    });
    assert.deepEqual(decide.attemptInput(busy), { name: NAME, current: usable, reason: 'renew', issuerRetryAfter: { primary: NOW + HOUR }, orders: [NOW - MIN], forced: true });
    const expired = cert(NOW - DAY, NOW);
    assert.deepEqual(decide.attemptInput(context({ certificate: expired, orders: [NOW - 2 * HOUR], lastError: { type: 'X', message: 'x', at: 1 } })), {
      name: NAME,
      current: expired,
      reason: 'expired',
    });
  });

  it('cert_obtaining: the attempt number, and whether an operator bypasses a floor that holds', () => {
    const full = [NOW - 3 * MIN, NOW - 2 * MIN, NOW - MIN];
    assert.deepEqual(decide.obtaining(context({ attemptSeq: 4 })), { type: 'cert_obtaining', name: NAME, reason: 'obtain', attempt: 5, forced: false, floorBypassed: false });
    assert.deepEqual(decide.obtaining(context({ certificate: usable, forced: true, orders: full })), {
      type: 'cert_obtaining',
      name: NAME,
      reason: 'renew',
      attempt: 1,
      forced: true,
      floorBypassed: true,
    });
    assert.equal(decide.obtaining(context({ forced: true, orders: full.slice(1) })).floorBypassed, false, 'forced, the floor not holding');
    assert.equal(decide.obtaining(context({ forced: false, orders: full })).floorBypassed, false, 'the floor holding, not forced (never started so)');
  });
});

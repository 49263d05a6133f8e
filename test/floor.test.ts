/**
 * The issuance floor's arithmetic (src/machines/floor.ts), pinned at its
 * edges with numbers written out: the clock skew a notBefore may be ahead by,
 * the rolling window (an order exactly one window old is out of it), exactly
 * `maxOrdersPerWindow` orders, the renewal interval after the last order, the
 * orders an attempt's error carries. Pure functions, no actor: milliseconds
 * (it is in the mutation set, stryker.config.json). The same rules through the
 * chart are in test/oracle.test.ts and through the engine in
 * test/never-hammer.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  floorUntil,
  flooredRenewAt,
  MAX_KEPT_ORDERS,
  notYetValid,
  ordersOfLoaded,
  ordersPlacedBy,
  recentOrders,
  whyUnusable,
  withOrders,
  withOrdersPlaced,
} from '../src/machines/floor.js';
import { defaultTimingPolicy, type TimingPolicy } from '../src/machines/policy.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const NOW = Date.UTC(2026, 6, 1);
/** Small, distinct numbers, so a rule that read the wrong field (or a default) shows. */
const P: TimingPolicy = { ...defaultTimingPolicy, clockSkewMs: 3 * MIN, minRenewalIntervalMs: 7 * MIN, maxOrdersPerWindow: 3, orderWindowMs: HOUR };

describe('whyUnusable: what an issued or stored certificate must be worth', () => {
  // A 30-day certificate renews at 2/3 of its lifetime (20 days) without jitter.
  const renewingAt = (renewAt: number) => ({ notBefore: renewAt - 20 * DAY, notAfter: renewAt + 10 * DAY });

  it('a certificate whose notBefore is ahead by at most the clock skew is valid already; one ms more is not', () => {
    assert.equal(whyUnusable({ notBefore: NOW + 3 * MIN, notAfter: NOW + 90 * DAY }, NOW, P), undefined);
    assert.equal(whyUnusable({ notBefore: NOW + 3 * MIN + 1, notAfter: NOW + 90 * DAY }, NOW, P), 'not-yet-valid');
    assert.equal(whyUnusable({ notBefore: NOW - DAY, notAfter: NOW + 89 * DAY }, NOW, P), undefined);
  });

  it('expired at its notAfter exactly; one ms before, usable but due at once (renewal-past)', () => {
    assert.equal(whyUnusable({ notBefore: NOW - 90 * DAY, notAfter: NOW }, NOW, P), 'expired');
    assert.equal(whyUnusable({ notBefore: NOW - 90 * DAY, notAfter: NOW + 1 }, NOW, P), 'renewal-past');
  });

  it('its renewal point exactly minRenewalIntervalMs away is usable; one ms nearer is not', () => {
    assert.equal(whyUnusable(renewingAt(NOW + 7 * MIN), NOW, P), undefined);
    assert.equal(whyUnusable(renewingAt(NOW + 7 * MIN - 1), NOW, P), 'renewal-past');
    // The default policy: 10 min.
    assert.equal(whyUnusable(renewingAt(NOW + 10 * MIN), NOW, defaultTimingPolicy), undefined);
    assert.equal(whyUnusable(renewingAt(NOW + 10 * MIN - 1), NOW, defaultTimingPolicy), 'renewal-past');
  });

  it('notYetValid: ahead by more than the clock skew, not by exactly it', () => {
    assert.equal(notYetValid({ notBefore: NOW + 3 * MIN }, NOW, P), false);
    assert.equal(notYetValid({ notBefore: NOW + 3 * MIN + 1 }, NOW, P), true);
    assert.equal(notYetValid({ notBefore: NOW - DAY }, NOW, P), false);
    assert.equal(notYetValid({ notBefore: NOW + 5 * MIN }, NOW, defaultTimingPolicy), false);
    assert.equal(notYetValid({ notBefore: NOW + 5 * MIN + 1 }, NOW, defaultTimingPolicy), true);
  });
});

describe('the orders inside the rolling window', () => {
  it('recentOrders: none for none; an order exactly one window old is out, one ms younger is in; oldest first', () => {
    assert.deepEqual(recentOrders(undefined, NOW, P), []);
    assert.deepEqual(recentOrders([], NOW, P), []);
    assert.deepEqual(recentOrders([NOW - HOUR, NOW - HOUR + 1], NOW, P), [NOW - HOUR + 1]);
    assert.deepEqual(recentOrders([NOW - MIN, NOW - 30 * MIN, NOW - 2 * HOUR, NOW - 45 * MIN], NOW, P), [NOW - 45 * MIN, NOW - 30 * MIN, NOW - MIN]);
  });

  it('recentOrders keeps the newest MAX_KEPT_ORDERS (100), whatever a stored record holds', () => {
    assert.equal(MAX_KEPT_ORDERS, 100);
    const many = Array.from({ length: 150 }, (_, i) => NOW - 150 + i);
    const kept = recentOrders(many, NOW, P);
    assert.equal(kept.length, 100);
    assert.equal(kept[0], NOW - 100);
    assert.equal(kept.at(-1), NOW - 1);
  });

  it('withOrders: the recent orders and `count` more at now; undefined when there are none', () => {
    assert.equal(withOrders(undefined, 0, NOW, P), undefined);
    assert.equal(withOrders([NOW - 2 * HOUR], 0, NOW, P), undefined, 'only orders out of the window: none');
    assert.deepEqual(withOrders(undefined, 1, NOW, P), [NOW]);
    assert.deepEqual(withOrders([NOW - 2 * HOUR, NOW - 10 * MIN], 2, NOW, P), [NOW - 10 * MIN, NOW, NOW]);
    assert.deepEqual(withOrders([NOW - 10 * MIN], 0, NOW, P), [NOW - 10 * MIN]);
  });

  it('withOrders stays bounded: the newest 100', () => {
    const full = Array.from({ length: 99 }, (_, i) => NOW - 99 + i);
    const kept = withOrders(full, 3, NOW, P)!;
    assert.equal(kept.length, 100);
    assert.equal(kept[0], NOW - 97);
    assert.deepEqual(kept.slice(-4), [NOW - 1, NOW, NOW, NOW]);
  });
});

describe('the floor: at most maxOrdersPerWindow orders per window', () => {
  it('holds from exactly maxOrdersPerWindow orders, until the oldest of the last ones leaves the window', () => {
    assert.equal(floorUntil(undefined, NOW, P), undefined);
    assert.equal(floorUntil([NOW - 50 * MIN, NOW - 10 * MIN], NOW, P), undefined, 'one under the floor');
    assert.equal(floorUntil([NOW - 10 * MIN, NOW - 50 * MIN, NOW - 40 * MIN], NOW, P), NOW + 10 * MIN, 'exactly at the floor (unsorted input)');
    assert.equal(floorUntil([NOW - 55 * MIN, NOW - 50 * MIN, NOW - 40 * MIN, NOW - 10 * MIN], NOW, P), NOW + 10 * MIN, 'over it: the third newest leaves first');
    // An order exactly one window old no longer counts.
    assert.equal(floorUntil([NOW - HOUR, NOW - 40 * MIN, NOW - 10 * MIN], NOW, P), undefined);
    assert.equal(floorUntil([NOW - HOUR + 1, NOW - 40 * MIN, NOW - 10 * MIN], NOW, P), NOW + 1);
  });

  it('with the default policy: 10 orders per 24 h', () => {
    const nine = Array.from({ length: 9 }, (_, i) => NOW - (9 - i) * HOUR);
    assert.equal(floorUntil(nine, NOW, defaultTimingPolicy), undefined);
    assert.equal(floorUntil([...nine, NOW - 30 * MIN], NOW, defaultTimingPolicy), NOW - 9 * HOUR + DAY);
  });

  it('flooredRenewAt: never sooner than minRenewalIntervalMs after the last order', () => {
    assert.equal(flooredRenewAt(NOW, undefined, P), NOW);
    assert.equal(flooredRenewAt(NOW, [], P), NOW);
    assert.equal(flooredRenewAt(NOW, [NOW - MIN, NOW - 30 * MIN], P), NOW + 6 * MIN, 'the last order, not the first');
    assert.equal(flooredRenewAt(NOW, [NOW - 7 * MIN], P), NOW, 'exactly the interval after it');
    assert.equal(flooredRenewAt(NOW + DAY, [NOW - MIN], P), NOW + DAY, 'a later renewal time stays');
    assert.equal(flooredRenewAt(NOW, [NOW], defaultTimingPolicy), NOW + 10 * MIN);
  });

  it('ordersOfLoaded: a certificate loaded without a record stands for one order at its notBefore, while inside the window', () => {
    assert.equal(ordersOfLoaded(undefined, NOW, P), undefined);
    assert.deepEqual(ordersOfLoaded({ notBefore: NOW }, NOW, P), [NOW]);
    assert.equal(ordersOfLoaded({ notBefore: NOW + 1 }, NOW, P), undefined, 'not before now: a clock ahead, no order of ours yet');
    assert.deepEqual(ordersOfLoaded({ notBefore: NOW - HOUR + 1 }, NOW, P), [NOW - HOUR + 1]);
    assert.equal(ordersOfLoaded({ notBefore: NOW - HOUR }, NOW, P), undefined, 'exactly one window old: out');
  });
});

describe('the orders an attempt placed, carried by its error', () => {
  const ORDERS = Symbol.for('certstate.orders');

  it('marks the error itself, not enumerably, and can mark it again', () => {
    const error = new Error('refused');
    assert.equal(withOrdersPlaced(error, 2), error);
    assert.equal(ordersPlacedBy(error), 2);
    assert.deepEqual(Object.getOwnPropertyDescriptor(error, ORDERS), { value: 2, writable: false, enumerable: false, configurable: true });
    // An attempt that retried marks the same error again with its total.
    withOrdersPlaced(error, 3);
    assert.equal(ordersPlacedBy(error), 3);
    const plain = { code: 'X' };
    assert.equal(withOrdersPlaced(plain, 1), plain);
    assert.equal(ordersPlacedBy(plain), 1);
  });

  it('wraps a thrown primitive (null too) in an Error that says what was thrown', () => {
    for (const [thrown, message] of [['boom', 'boom'], [null, 'null'], [undefined, 'undefined'], [7, '7']] as const) {
      const wrapped = withOrdersPlaced(thrown, 1);
      assert.ok(wrapped instanceof Error, String(thrown));
      assert.equal(wrapped.message, message);
      assert.equal(ordersPlacedBy(wrapped), 1);
    }
  });

  it('reads 0 when the error says nothing usable: no mark, not an object, not a positive integer', () => {
    assert.equal(ordersPlacedBy(new Error('x')), 0);
    for (const thrown of [undefined, null, 'x', 3]) assert.equal(ordersPlacedBy(thrown), 0, String(thrown));
    for (const value of [0, -2, 1.5, Number.NaN, '2', 2n]) assert.equal(ordersPlacedBy({ [ORDERS]: value }), 0, String(value));
    assert.equal(ordersPlacedBy({ [ORDERS]: 1 }), 1);
  });
});

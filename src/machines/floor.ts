/**
 * What a certificate must be worth to be used, and the issuance floor of one
 * name: pure functions of their inputs, read by the chart's guards and
 * actions and by the attempt (which refuses to store what the chart would
 * refuse to serve). Never hammer a CA: whatever an issuer returns, a name
 * gets at most `maxOrdersPerWindow` orders per rolling `orderWindowMs`, and
 * a renewal is never scheduled sooner than `minRenewalIntervalMs` after the
 * last order.
 */
import type { UnusableReason } from '../errors.js';
import type { CertificateMeta } from '../types.js';
import { renewalTime, type TimingPolicy } from './policy.js';

/** Orders kept per name: enough for any sane floor, bounded whatever a stored record says. */
export const MAX_KEPT_ORDERS = 100;

/**
 * Why `cert` cannot be used at `now` (names aside: the attempt checks those), or
 * undefined when it can: valid already (within `clockSkewMs`), not expired, and
 * its renewal point (without jitter) at least `minRenewalIntervalMs` away —
 * a certificate due for renewal the moment it arrives would be ordered again at once.
 */
export function whyUnusable(cert: Pick<CertificateMeta, 'notBefore' | 'notAfter'>, now: number, policy: TimingPolicy): UnusableReason | undefined {
  if (cert.notBefore > now + policy.clockSkewMs) return 'not-yet-valid';
  if (cert.notAfter <= now) return 'expired';
  if (renewalTime(cert, 0, policy) < now + policy.minRenewalIntervalMs) return 'renewal-past';
  return undefined;
}

/** A certificate another process stored (or a previous run) is not served before its notBefore (within `clockSkewMs`). */
export function notYetValid(cert: Pick<CertificateMeta, 'notBefore'>, now: number, policy: TimingPolicy): boolean {
  return cert.notBefore > now + policy.clockSkewMs;
}

/** The orders still inside the rolling window at `now`, oldest first, bounded. */
export function recentOrders(orders: readonly number[] | undefined, now: number, policy: TimingPolicy): number[] {
  return (orders?.filter((at) => at > now - policy.orderWindowMs) ?? []).sort((a, b) => a - b).slice(-MAX_KEPT_ORDERS);
}

/** `orders` after `count` more orders at `now` (undefined when there are none to keep). */
export function withOrders(orders: readonly number[] | undefined, count: number, now: number, policy: TimingPolicy): number[] | undefined {
  const recent = recentOrders(orders, now, policy);
  for (let i = 0; i < count; i++) recent.push(now);
  const kept = recent.slice(-MAX_KEPT_ORDERS);
  return kept.length > 0 ? kept : undefined;
}

/** When the floor lets the next order be placed, if it holds at `now` (undefined: an order may be placed). */
export function floorUntil(orders: readonly number[] | undefined, now: number, policy: TimingPolicy): number | undefined {
  const recent = recentOrders(orders, now, policy);
  if (recent.length < policy.maxOrdersPerWindow) return undefined;
  return recent[recent.length - policy.maxOrdersPerWindow]! + policy.orderWindowMs;
}

/** A renewal time, never sooner than `minRenewalIntervalMs` after the last order. */
export function flooredRenewAt(renewAt: number, orders: readonly number[] | undefined, policy: TimingPolicy): number {
  // No order: the last one is at -Infinity (Math.max of nothing), so renewAt stands.
  const last = Math.max(...(orders ?? []));
  return Math.max(renewAt, last + policy.minRenewalIntervalMs);
}

/** The orders a certificate loaded without a record stands for: itself, at its notBefore, while inside the window. */
export function ordersOfLoaded(cert: Pick<CertificateMeta, 'notBefore'> | undefined, now: number, policy: TimingPolicy): number[] | undefined {
  return cert !== undefined && cert.notBefore > now - policy.orderWindowMs && cert.notBefore <= now ? [cert.notBefore] : undefined;
}

const ORDERS = Symbol.for('certstate.orders');

/**
 * Mark an attempt's error with the orders it placed (issuer calls that
 * reached the CA), so the chart counts them toward the floor. Returns an
 * error object (a thrown primitive is wrapped).
 */
export function withOrdersPlaced<E>(error: E, orders: number): E | Error {
  const target: object = typeof error === 'object' && error !== null ? error : new Error(String(error));
  Object.defineProperty(target, ORDERS, { value: orders, enumerable: false, configurable: true });
  return target as E | Error;
}

/** The orders an attempt's error says it placed (0 when it placed none: storage, lock, refusal, floor). */
export function ordersPlacedBy(error: unknown): number {
  if (typeof error !== 'object' || error === null) return 0;
  const orders = (error as { [ORDERS]?: unknown })[ORDERS];
  // Number.isInteger is false for anything but an integral number (it is no type guard, hence the cast).
  return Number.isInteger(orders) ? Math.max(0, orders as number) : 0;
}

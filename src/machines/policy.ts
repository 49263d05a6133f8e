/**
 * Timing policy: when to renew, how long to back off. Pure functions of their
 * inputs (randomness is passed in), so the statechart stays deterministic
 * under test and the numbers are documented in one place.
 */
import type { CertificateMeta } from '../types.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Tunables of renewal and backoff. Every field has a documented default. */
export interface TimingPolicy {
  /** First backoff after a failure (default 1 min); each further failure multiplies it by `backoffFactor`. */
  backoffInitialMs: number;
  /** Growth per consecutive failure (default 10: 1 min → 10 min → 100 min). */
  backoffFactor: number;
  /** Longest backoff (default 6 h). */
  backoffMaxMs: number;
  /** Jitter as a fraction of the backoff, applied as ±jitter (default 0.2). */
  backoffJitter: number;
  /** Share of the lifetime after which to renew (default 2/3). */
  renewRatio: number;
  /** Share of the lifetime for short-lived certificates (default 1/2). */
  shortLivedRenewRatio: number;
  /** Lifetimes below this use `shortLivedRenewRatio` (default 10 days). */
  shortLivedBelowMs: number;
  /** Renewal jitter as a fraction of the lifetime, subtracted at random (default 0.05): renew a bit early, never late. */
  renewJitter: number;
  /** Retry after our own storage failed (unreachable, timeout), ±20 % (default 5 s); not counted as a CA failure. */
  storageRetryMs: number;
  /** A certificate whose notBefore is at most this far ahead of our clock counts as valid (default 5 min). */
  clockSkewMs: number;
  /**
   * Renewal is never scheduled sooner than this after an order, and an issued
   * certificate whose renewal point is nearer than this is unusable (default 10 min).
   */
  minRenewalIntervalMs: number;
  /** The issuance floor: at most this many orders per name per `orderWindowMs`, whatever the reason (default 10). */
  maxOrdersPerWindow: number;
  /** The issuance floor's rolling window (default 24 h). */
  orderWindowMs: number;
}

export const defaultTimingPolicy: TimingPolicy = {
  backoffInitialMs: MINUTE,
  backoffFactor: 10,
  backoffMaxMs: 6 * HOUR,
  backoffJitter: 0.2,
  renewRatio: 2 / 3,
  shortLivedRenewRatio: 1 / 2,
  shortLivedBelowMs: 10 * DAY,
  renewJitter: 0.05,
  storageRetryMs: 5_000,
  clockSkewMs: 5 * MINUTE,
  minRenewalIntervalMs: 10 * MINUTE,
  maxOrdersPerWindow: 10,
  orderWindowMs: DAY,
};

/** When to renew a certificate without ARI: at 2/3 of its lifetime (1/2 when short-lived), a little earlier at random. */
export function renewalTime(cert: Pick<CertificateMeta, 'notBefore' | 'notAfter'>, random: number, policy: TimingPolicy = defaultTimingPolicy): number {
  const lifetime = Math.max(0, cert.notAfter - cert.notBefore);
  const ratio = lifetime < policy.shortLivedBelowMs ? policy.shortLivedRenewRatio : policy.renewRatio;
  return Math.round(cert.notBefore + lifetime * ratio - lifetime * policy.renewJitter * random);
}

/**
 * Backoff after the `failures`-th consecutive failure (1-based), jittered by
 * ±`backoffJitter`, and never shorter than the CA's Retry-After.
 * Returns the absolute time of the next allowed attempt.
 */
export function nextAttemptTime(
  now: number,
  failures: number,
  random: number,
  retryAfter: number | undefined,
  policy: TimingPolicy = defaultTimingPolicy,
): number {
  const exponent = Math.max(0, failures - 1);
  const base = Math.min(policy.backoffMaxMs, policy.backoffInitialMs * policy.backoffFactor ** exponent);
  // At most backoffMaxMs × (1 + jitter): base is capped and the jitter factor is below 1 + jitter.
  const at = Math.round(now + base * (1 + policy.backoffJitter * (2 * random - 1)));
  return Math.max(at, retryAfter ?? at);
}

/**
 * ARI (RFC 9773) timing: where in the CA's suggested window to renew, and
 * when to ask again. Pure functions; the engine does the asking.
 */
import type { RenewalInfo } from '../types.js';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/**
 * Rechecks fall due on whole multiples of this (rounded up, never sooner than
 * asked): the names due within one second share one wake of the process
 * instead of one each (a million names: ~46 rechecks a second, one wake-up).
 */
export const ARI_GRAIN_MS = 1000;

/** When a recheck asked for `at` falls due: `at` rounded up to the grain. */
export function ariDueAt(at: number): number {
  return Math.ceil(at / ARI_GRAIN_MS) * ARI_GRAIN_MS;
}

/** Recheck interval when the CA gives no Retry-After, or the request failed. */
export const ARI_DEFAULT_RECHECK_MS = 6 * 60 * MINUTE;

/**
 * A uniformly random time inside the suggested window; `now` when the window
 * is already over (the CA's signal to renew at once, e.g. after a revocation
 * incident). An invalid window (end not after start) counts as no answer.
 */
export function ariRenewalTime(info: RenewalInfo, now: number, random: number): number | undefined {
  if (!Number.isFinite(info.start) || !Number.isFinite(info.end) || info.end <= info.start) return undefined;
  if (info.end <= now) return now;
  const from = Math.max(info.start, now);
  return Math.round(from + (info.end - from) * random);
}

/** Delay until the next check: the CA's Retry-After clamped to [1 min, 1 day], else 6 h. */
export function clampAriRecheck(retryAfter: number | undefined, now: number): number {
  if (retryAfter === undefined || !Number.isFinite(retryAfter)) return ARI_DEFAULT_RECHECK_MS;
  return Math.min(DAY, Math.max(MINUTE, retryAfter - now));
}

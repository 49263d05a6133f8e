/**
 * Pausing names that have failed for a long time, like Let's Encrypt's
 * "paused" identifiers (names an account kept failing to validate for days):
 * an on-demand name that has had nothing to serve while failing for longer
 * than its `pauseAfterMs` places no more orders — not at the end of a
 * backoff, not at restart — until an operator's FORCE_RENEW or a handshake
 * with permission asked afresh (RESUME) gives it one attempt. A success ends
 * the failing streak; another failure pauses it again once that failure's
 * backoff is over.
 *
 * Pure functions of the chart's context; the chart (certificate.ts) calls them
 * from its `paused` guard and its failure/success actions.
 */
import { certificateKind, type CertificateContext } from './certificate-io.js';

/** Since when the name has been failing, after one more failure at `at` (the streak's first failure, kept). */
export function failingSinceAfterFailure(context: Pick<CertificateContext, 'failingSince'>, at: number): number {
  return context.failingSince ?? at;
}

/**
 * The name is paused at `now`: it pauses (`pauseAfterMs` set: on-demand
 * names), has been failing for at least that long, and has no usable
 * certificate (a name that still serves one keeps renewing in its backoff).
 */
export function isPaused(context: Pick<CertificateContext, 'failingSince' | 'pauseAfterMs' | 'certificate'>, now: number): boolean {
  // Not failing: failing for -Infinity ms; a name that does not pause: it pauses after Infinity ms.
  const failingFor = now - (context.failingSince ?? Infinity);
  return failingFor >= (context.pauseAfterMs ?? Infinity) && certificateKind(context, now) !== 'usable';
}

/** The failing streak's start as read back from a failure record (records written before it was kept: the last error's time). */
export function failingSinceOf(failure: { attempts: number; failingSince?: number; lastError?: { at: number } } | undefined): number | undefined {
  if (!failure) return undefined;
  return failure.failingSince ?? (failure.attempts > 0 ? failure.lastError?.at : undefined);
}

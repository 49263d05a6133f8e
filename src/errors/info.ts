/** Errors as safe, serialisable records (`ErrorInfo`) and the normalisation of `retryAfter`. */
import type { ErrorInfo } from '../types.js';

/** Turn anything thrown into a safe, serialisable `ErrorInfo`. */
export function toErrorInfo(error: unknown, at: number): ErrorInfo {
  if (error instanceof Error) {
    const e = error as Error & { code?: unknown; retryAfter?: unknown; detail?: unknown };
    // An issuer's error may carry anything in `name` and `message`: status, events and pages need text.
    const info: ErrorInfo = { type: typeof e.name === 'string' && e.name ? e.name : 'Error', message: textOf(e.message), at };
    if (typeof e.code === 'string') info.code = e.code;
    const problemType = (e as { problemType?: unknown }).problemType;
    if (typeof problemType === 'string') info.problemType = problemType;
    if (typeof e.detail === 'string') info.detail = e.detail;
    const retryAfter = retryAfterToEpoch(e.retryAfter, at);
    if (retryAfter !== undefined) info.retryAfter = retryAfter;
    const holds = (e as { issuerRetryAfter?: unknown }).issuerRetryAfter;
    if (isRetryAfterRecord(holds) && Object.keys(holds).length > 0) info.issuerRetryAfter = { ...holds };
    return info;
  }
  return { type: 'Error', message: String(error), at };
}

/** Any value as text, without throwing. */
function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** A `Record<issuerId, epoch ms>` (as stored in a failure record). */
export function isRetryAfterRecord(value: unknown): value is Record<string, number> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const entries = Object.entries(value);
  return entries.length <= 100 && entries.every(([k, v]) => k.length < 2000 && typeof v === 'number' && Number.isFinite(v) && v >= 0);
}

/**
 * Normalise a `retryAfter` (a `Date`, an epoch ms timestamp, or seconds) to
 * epoch ms. Numbers below 1e11 are taken as seconds from `now` (HTTP's
 * delta-seconds); larger ones as epoch milliseconds.
 */
export function retryAfterToEpoch(value: unknown, now: number): number | undefined {
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.getTime() : undefined;
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) {
    return value < 1e11 ? now + value * 1000 : value;
  }
  return undefined;
}

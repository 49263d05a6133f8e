/** What the engine tells a handshake or an operator it could not serve. */
import type { ErrorInfo } from '../types.js';
import { CertstateError } from './base.js';

/** A waiting handshake gave up after `handshakeTimeout`; the attempt goes on. */
export class HandshakeTimeoutError extends CertstateError {
  constructor(name: string, timeoutMs: number) {
    super(`no certificate for ${name} within ${timeoutMs} ms; the attempt goes on`, { code: 'ERR_HANDSHAKE_TIMEOUT' });
  }
}

/** The name is not managed and on-demand issuance did not allow it. */
export class NameNotAllowedError extends CertstateError {
  constructor(name: string, reason: string) {
    super(`certificate for ${name} not allowed: ${reason}`, { code: 'ERR_NAME_NOT_ALLOWED' });
  }
}

/** Too many handshakes are already waiting. */
export class TooManyWaitersError extends CertstateError {
  constructor(name: string, limit: number) {
    super(`too many handshakes waiting for ${name} (limit ${limit})`, { code: 'ERR_TOO_MANY_WAITERS' });
  }
}

/** An operator's action did not get its outcome in time; what it started goes on. */
export class OperatorTimeoutError extends CertstateError {
  constructor(name: string, timeoutMs: number) {
    super(`no outcome for ${name} within ${timeoutMs} ms; the attempt goes on`, { code: 'ERR_OPERATOR_TIMEOUT' });
  }
}

/** The engine (or the name's actor) was stopped while the handshake waited. */
export class EngineStoppedError extends CertstateError {
  constructor() {
    super('certificate engine stopped', { code: 'ERR_STOPPED' });
  }
}

/**
 * No certificate to serve, and the last attempt failed: `lastError` is that
 * attempt's error (its `type`, `code`, and for a CA's refusal `problemType`
 * and `detail`), `nextAttemptAt` when the next attempt is scheduled (also in
 * `retryAfter`).
 */
export class CertificateUnavailableError extends CertstateError {
  /** The failed attempt's error, as recorded (safe to show). */
  readonly lastError: ErrorInfo;
  /** When the next attempt is scheduled, ms since epoch (the backoff's end); absent when none is. */
  readonly nextAttemptAt?: number;

  constructor(name: string, last: ErrorInfo, nextAttemptAt?: number) {
    const when = nextAttemptAt === undefined ? '' : `; next attempt at ${new Date(nextAttemptAt).toISOString()}`;
    super(`no certificate for ${name}: ${last.type}: ${last.message}${when}`, {
      code: 'ERR_CERTIFICATE_UNAVAILABLE',
      detail: last.detail,
      retryAfter: nextAttemptAt,
    });
    this.lastError = last;
    if (nextAttemptAt !== undefined) this.nextAttemptAt = nextAttemptAt;
  }
}

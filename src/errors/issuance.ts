/** Errors of issuers and of an issuance attempt as a whole. */
import { CertstateError } from './base.js';

/** An issuer failed to issue. Issuers should throw subclasses of this. */
export class IssuanceError extends CertstateError {
  constructor(message: string, options?: { code?: string; cause?: unknown; retryAfter?: number; detail?: string }) {
    super(message, { ...options, code: options?.code ?? 'ERR_ISSUANCE' });
  }
}

/** Every issuer of an attempt failed; `errors` holds each one's error in order. */
export class AllIssuersFailedError extends IssuanceError {
  readonly errors: readonly unknown[];
  /** Per issuer id: the CA's Retry-After still in force (epoch ms). Later attempts skip that issuer until then. */
  readonly issuerRetryAfter: Readonly<Record<string, number>>;
  constructor(errors: readonly unknown[], retryAfter?: number, issuerRetryAfter: Record<string, number> = {}) {
    const parts = errors.map((e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)));
    super(`all issuers failed: ${parts.join('; ')}`, { code: 'ERR_ALL_ISSUERS_FAILED', retryAfter });
    this.errors = errors;
    this.issuerRetryAfter = { ...issuerRetryAfter };
  }
}

/** An issuer was not asked in this attempt: its CA's Retry-After has not passed yet (another issuer was tried). */
export class IssuerOnHoldError extends IssuanceError {
  constructor(issuerId: string, until: number) {
    super(`issuer ${issuerId} not asked: its CA asked us to wait until ${new Date(until).toISOString()}`, { code: 'ERR_ISSUER_ON_HOLD', retryAfter: until });
  }
}

/** An issued certificate did not match its key. */
export class InvalidCertificateError extends IssuanceError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: 'ERR_INVALID_CERTIFICATE', cause });
  }
}

/** Why an issued certificate cannot be used (see `UnusableCertificateError`). */
export type UnusableReason = 'names' | 'not-yet-valid' | 'expired' | 'renewal-past';

/**
 * An issuer returned a certificate that cannot be used: it does not cover the
 * requested names, is not valid yet (beyond `timing.clockSkewMs`), has expired,
 * or its renewal point is less than `timing.minRenewalIntervalMs` away (a
 * certificate that would be renewed at once: a hot loop). Nothing is stored;
 * the attempt fails with the normal backoff, and the order counts toward the
 * name's issuance floor.
 */
export class UnusableCertificateError extends IssuanceError {
  readonly reason: UnusableReason;
  constructor(message: string, reason: UnusableReason) {
    super(message, { code: 'ERR_CERTIFICATE_UNUSABLE' });
    this.reason = reason;
  }
}

/**
 * The name's issuance floor holds: `timing.maxOrdersPerWindow` orders were
 * placed within `timing.orderWindowMs` (in this process or, through the
 * failure record, another one of the cluster). No order before `retryAfter`;
 * an operator's `forceRenew` may bypass it (and says so in logs and events).
 */
export class IssuanceFloorError extends IssuanceError {
  constructor(name: string, orders: number, windowMs: number, until: number) {
    super(`${orders} orders for ${name} within ${Math.round(windowMs / 60_000)} min: no order before ${new Date(until).toISOString()}`, {
      code: 'ERR_ISSUANCE_FLOOR',
      retryAfter: until,
    });
  }
}

/** An issuance attempt ran past `attemptTimeout`: it is aborted, its slot freed, and whatever its issuer returns later is discarded. */
export class AttemptTimeoutError extends IssuanceError {
  constructor(name: string, timeoutMs: number) {
    super(`the attempt for ${name} did not end within ${timeoutMs} ms: aborted`, { code: 'ERR_ATTEMPT_TIMEOUT' });
  }
}

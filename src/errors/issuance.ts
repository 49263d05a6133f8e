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

/** An issued certificate did not match its key or the requested names. */
export class InvalidCertificateError extends IssuanceError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: 'ERR_INVALID_CERTIFICATE', cause });
  }
}

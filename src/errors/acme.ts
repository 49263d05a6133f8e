/** Errors of the ACME issuer (src/adapters/issuers/acme.ts). */
import { IssuanceError } from './issuance.js';

/** Options of `AcmeError` and its subclasses. */
export interface AcmeErrorOptions {
  /** certstate's more specific code (e.g. `ERR_ACME_POLL_TIMEOUT`); default: the class's. Never the CA's problem type. */
  code?: string;
  /** The CA's problem `type` (e.g. `urn:ietf:params:acme:error:rateLimited`), when it sent one. */
  problemType?: string;
  cause?: unknown;
  /** Earliest next attempt, ms since epoch (from the CA's `Retry-After`). */
  retryAfter?: number;
  /** The CA's problem `detail`. */
  detail?: string;
  /** HTTP status of the CA's response, when there was one. */
  status?: number;
}

/**
 * An ACME CA refused or failed a request. `code` is `ERR_ACME` (or a more
 * specific certstate code: `ERR_ACME_MALFORMED_RESPONSE`,
 * `ERR_ACME_POLL_TIMEOUT`, `ERR_ACME_ORDER_INVALID`, `ERR_ACME_UNAVAILABLE`);
 * `problemType` is the CA's problem type (e.g.
 * `urn:ietf:params:acme:error:malformed`) when it sent one, `detail` its
 * problem detail, `status` the HTTP status.
 */
export class AcmeError extends IssuanceError {
  /** HTTP status of the CA's response, when there was one. */
  readonly status?: number;
  /** The CA's problem type (an RFC 8555 URN), when it sent one. */
  readonly problemType?: string;

  constructor(message: string, options?: AcmeErrorOptions) {
    const { problemType, status, ...rest } = options ?? {};
    super(message, { ...rest, code: options?.code ?? 'ERR_ACME' });
    if (status !== undefined) this.status = status;
    if (problemType !== undefined) this.problemType = problemType;
  }
}

/** The CA rate-limited us (HTTP 429 or `rateLimited`); `retryAfter` says when to come back. Code `ERR_ACME_RATE_LIMITED`. */
export class AcmeRateLimitedError extends AcmeError {
  constructor(message: string, options?: AcmeErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_ACME_RATE_LIMITED' });
  }
}

/**
 * The CA could not validate a challenge (code `ERR_ACME_CHALLENGE_FAILED`,
 * or `ERR_ACME_NO_USABLE_CHALLENGE` when no offered challenge could be
 * answered): `problemType` is the CA's problem type (e.g.
 * `urn:ietf:params:acme:error:connection`), `detail` its explanation.
 */
export class ChallengeFailedError extends AcmeError {
  /** The identifier (name) whose authorization failed. */
  readonly identifier: string;
  /** The challenge type that was tried (`http-01`, `tls-alpn-01`, `dns-01`), when one was. */
  readonly challengeType?: string;

  constructor(identifier: string, challengeType: string | undefined, message: string, options?: AcmeErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_ACME_CHALLENGE_FAILED' });
    this.identifier = identifier;
    if (challengeType !== undefined) this.challengeType = challengeType;
  }
}

/** The ACME account could not be registered, loaded or used (e.g. EAB required or refused). Code `ERR_ACME_ACCOUNT`. */
export class AccountError extends AcmeError {
  constructor(message: string, options?: AcmeErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_ACME_ACCOUNT' });
  }
}

/** The CA could not be reached (connection refused, reset, DNS, TLS), or its answer was too large. Code `ERR_ACME_NETWORK` (or `ERR_ACME_RESPONSE_TOO_LARGE`). */
export class AcmeNetworkError extends AcmeError {
  constructor(message: string, options?: AcmeErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_ACME_NETWORK' });
  }
}

/** A request to the CA took longer than `requestTimeoutMs`. Code `ERR_ACME_TIMEOUT`. */
export class AcmeTimeoutError extends AcmeNetworkError {
  constructor(message: string, options?: AcmeErrorOptions) {
    super(message, { ...options, code: options?.code ?? 'ERR_ACME_TIMEOUT' });
  }
}

/** The root of certstate's typed errors, and bad configuration. */

/** Base class of every certstate error. */
export class CertstateError extends Error {
  /** Stable machine-readable code. */
  readonly code: string;
  /** Earliest time another attempt is allowed, ms since epoch (a CA's Retry-After). */
  retryAfter?: number;
  /** A problem detail (e.g. the ACME problem document's `detail`). */
  detail?: string;

  constructor(message: string, options?: { code?: string; cause?: unknown; retryAfter?: number; detail?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options?.code ?? 'ERR_CERTSTATE';
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter;
    if (options?.detail !== undefined) this.detail = options.detail;
  }
}

/** Bad configuration passed to a factory. */
export class ConfigError extends CertstateError {
  constructor(message: string) {
    super(message, { code: 'ERR_CONFIG' });
  }
}

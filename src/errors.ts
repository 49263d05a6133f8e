/**
 * (Over 400 lines on purpose: every typed error in one module, so callers and
 * the README's error table — checked by test/readme.test.ts — have one place.)
 *
 * Typed errors. Every error certstate raises is a `CertstateError` with a
 * stable `name` (its class) and `code`, so callers can branch without parsing
 * messages. A `code` is certstate's own constant: the class's, or one of the
 * few more specific codes documented on the class; never text a CA or a
 * peer sent (a CA's problem type is kept in `AcmeError.problemType`).
 * Messages never contain key material.
 */
import type { ErrorInfo } from './types.js';

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

/** A storage key outside the allowed alphabet or shape. */
export class InvalidKeyError extends CertstateError {
  constructor(key: string, reason: string) {
    super(`invalid storage key ${JSON.stringify(key.slice(0, 200))}: ${reason}`, { code: 'ERR_INVALID_KEY' });
  }
}

/** A storage backend failed (I/O, connection). */
export class StorageError extends CertstateError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, { code: options?.code ?? 'ERR_STORAGE', cause: options?.cause });
  }
}

/** A stored value could not be parsed; treated as absent. */
export class CorruptStorageError extends StorageError {
  constructor(key: string, reason: string, cause?: unknown) {
    super(`corrupt stored value at ${key}: ${reason}`, { code: 'ERR_STORAGE_CORRUPT', cause });
  }
}

/** A write presented a fencing token that is no longer the newest. */
export class FencingError extends StorageError {
  constructor(lockKey: string, token: number) {
    super(`write refused: fencing token ${token} for ${lockKey} is stale`, { code: 'ERR_FENCED' });
  }
}

/** The lease of a held lock was lost. */
export class LockLostError extends StorageError {
  constructor(lockKey: string) {
    super(`lock ${lockKey} was lost`, { code: 'ERR_LOCK_LOST' });
  }
}

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

// ─── Name hygiene and on-demand refusals ───────────────────────────────────

/**
 * Make untrusted text (an SNI value, a configured name) safe for a log line or
 * an error message: truncated to `maxLength` UTF-16 units, quoted, and every
 * character outside printable ASCII written as `\uXXXX`, so control
 * characters, CR/LF, U+2028, bidi overrides and NUL cannot forge log lines or
 * mislead a reader.
 */
export function escapeForLog(value: string, maxLength = 100): string {
  const text = String(value);
  const cut = text.length > maxLength ? text.slice(0, maxLength) : text;
  const quoted = JSON.stringify(cut).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return cut === text ? quoted : `${quoted}…(${text.length} chars)`;
}

/** Why `normalizeName` refused a name (machine-readable; see names.ts for each rule). */
export type InvalidNameReason =
  | 'empty'
  | 'too-long'
  | 'label-too-long'
  | 'too-many-labels'
  | 'empty-label'
  | 'bad-character'
  | 'wildcard'
  | 'ip-literal'
  | 'numeric-tld'
  | 'bad-punycode'
  | 'bad-idn'
  | 'reserved-label'
  | 'hyphen'
  | 'single-label'
  | 'recursive-labels';

/** A server name (SNI or configured) that fails name hygiene. */
export class InvalidNameError extends CertstateError {
  /** Which rule refused the name. */
  readonly reason: InvalidNameReason;
  /** The offending input, escaped and truncated by `escapeForLog`: safe to log. */
  readonly escapedInput: string;

  constructor(input: string, reason: InvalidNameReason, explanation?: string) {
    const escaped = escapeForLog(input);
    super(`invalid name ${escaped}: ${reason}${explanation ? ` (${explanation})` : ''}`, { code: 'ERR_INVALID_NAME' });
    this.reason = reason;
    this.escapedInput = escaped;
  }
}

/** Why on-demand issuance refused a name. */
export type OnDemandRefusal =
  /** The decision (decide / ask) said no. */
  | 'denied'
  /** The decision could not be made (threw, timed out, endpoint down, non-2xx other than 4xx): fail closed. */
  | 'decision-failed'
  /** The global issuance budget for new on-demand names is spent. */
  | 'rate-limited'
  /** Too many decisions are already in flight (a flood of distinct names). */
  | 'overloaded';

/** On-demand issuance refused a name; `reason` says why. A `NameNotAllowedError`. */
export class OnDemandRefusedError extends NameNotAllowedError {
  /** Why the name was refused. */
  readonly reason: OnDemandRefusal;

  constructor(name: string, reason: OnDemandRefusal, options?: { retryAfter?: number; cause?: unknown }) {
    super(escapeForLog(name), reason);
    this.reason = reason;
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter;
    if (options?.cause !== undefined) Object.defineProperty(this, 'cause', { value: options.cause, configurable: true, writable: true });
  }
}

// ─── ACME (appended by the ACME issuer, src/adapters/issuers/acme.ts) ─────

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

// ─── DNS-01 providers (src/adapters/challenges/dns) ───────────────────────

/** Options of `DnsError` and its subclasses. */
export interface DnsErrorOptions {
  /** Machine-readable code. */
  code?: string;
  cause?: unknown;
  /** The provider that failed (`rfc2136`, `cloudflare`, `route53`, `acme-dns`, `exec`, …). */
  provider?: string;
  /** The DNS server or API endpoint involved, when there is one (never with credentials). */
  server?: string;
}

/**
 * A DNS-01 provider could not publish, withdraw or check a TXT record.
 * Messages never contain credentials: providers scrub them before throwing.
 */
export class DnsError extends IssuanceError {
  /** The provider that failed, when known. */
  readonly provider?: string;
  /** The DNS server or API endpoint involved, when there is one. */
  readonly server?: string;

  constructor(message: string, options?: DnsErrorOptions) {
    super(message, { code: options?.code ?? 'ERR_DNS', ...(options?.cause !== undefined ? { cause: options.cause } : {}) });
    if (options?.provider !== undefined) this.provider = options.provider;
    if (options?.server !== undefined) this.server = options.server;
  }
}

/**
 * A DNS server did not give a usable answer to a query or an update: it timed
 * out (`ERR_DNS_TIMEOUT`), answered with an error RCODE (`ERR_DNS_RCODE`, the
 * RCODE's name in `rcode`, e.g. `REFUSED`), refused our TSIG signature
 * (`ERR_DNS_TSIG_REFUSED`, the TSIG error in `rcode`, e.g. `BADKEY`), or sent a
 * malformed, unsigned or mismatched message
 * (`ERR_DNS_MALFORMED`).
 */
export class DnsServerError extends DnsError {
  /** The RCODE the server answered, when it answered with one (e.g. `REFUSED`, `NOTAUTH`). */
  readonly rcode?: string;

  constructor(message: string, options?: DnsErrorOptions & { rcode?: string }) {
    super(message, { ...options, code: options?.code ?? 'ERR_DNS_SERVER' });
    if (options?.rcode !== undefined) this.rcode = options.rcode;
  }
}

/**
 * The TXT value was not visible on every authoritative server of its zone
 * within the propagation timeout. `lagging` names each server that did not
 * answer it, with why (`ns2.example.com (192.0.2.2): answers without the value`).
 */
export class DnsPropagationError extends DnsError {
  /** The record name that was checked. */
  readonly fqdn: string;
  /** The servers that did not answer the value, each with the last reason. */
  readonly lagging: readonly string[];

  constructor(fqdn: string, lagging: readonly string[], timeoutMs: number, options?: DnsErrorOptions) {
    super(`TXT value at ${fqdn} not visible on every authoritative server within ${timeoutMs} ms; lagging: ${lagging.join('; ')}`, {
      ...options,
      code: options?.code ?? 'ERR_DNS_PROPAGATION_TIMEOUT',
    });
    this.fqdn = fqdn;
    this.lagging = [...lagging];
  }
}

/**
 * A DNS provider's API or script refused or failed (HTTP status, API error,
 * script exit code); `status` holds the HTTP status or the exit code.
 */
export class DnsProviderError extends DnsError {
  /** The HTTP status of the API's answer, or the exit code of an `exec` script. */
  readonly status?: number;

  constructor(message: string, options?: DnsErrorOptions & { status?: number }) {
    super(message, { ...options, code: options?.code ?? 'ERR_DNS_PROVIDER' });
    if (options?.status !== undefined) this.status = options.status;
  }
}

/**
 * Codes of our own storage failing us: unreachable (`ERR_STORAGE`), timing
 * out (`ERR_STORAGE_TIMEOUT`), or our lock taken over by another process
 * (`ERR_FENCED`, `ERR_LOCK_LOST`). None is the CA's verdict on the name: an
 * attempt that ends with one is retried soon, not counted as a failed
 * attempt, and not recorded for the cluster.
 */
export function isStorageFault(code: string | undefined): boolean {
  return code === 'ERR_STORAGE' || code === 'ERR_STORAGE_TIMEOUT' || code === 'ERR_FENCED' || code === 'ERR_LOCK_LOST';
}

/** Name hygiene and on-demand refusals: what a server name may be, and why one was refused. */
import { CertstateError } from './base.js';
import { NameNotAllowedError } from './engine.js';

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

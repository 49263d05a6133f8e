/**
 * Name hygiene: the one gate every server name (SNI value, configured name)
 * passes before anything else (cache, storage key, decision, CA) sees it.
 *
 * Anyone on the internet chooses the SNI value, so the rules are strict and
 * the output alphabet is tiny: lower-case LDH labels (`[a-z0-9-]`, A-labels
 * for IDNs) joined by dots, an optional leading `*` label for configured
 * wildcards, or a canonical IP literal when IP certificates are enabled.
 */
import { isIP } from 'node:net';
import { canonicalIp } from './ip.js';
import { domainToASCII, domainToUnicode } from 'node:url';
import type { Logger } from 'pino';
import { InvalidNameError, escapeForLog, type InvalidNameReason } from './errors.js';

export { InvalidNameError, escapeForLog, type InvalidNameReason };

/** Longest name accepted, in octets (RFC 1035, without the root dot). */
export const MAX_NAME_LENGTH = 253;
/** Longest label accepted, in octets (RFC 1035). */
export const MAX_LABEL_LENGTH = 63;
/** Most labels accepted (Let's Encrypt's limit). */
export const MAX_LABELS = 10;
/**
 * Most identical consecutive labels accepted. Crawlers that read CT logs
 * probe `x.example.com`, then `x.x.example.com`, … and each on-demand cert
 * feeds the next round; Let's Encrypt refuses such names (boulder#8646).
 * Legitimate names almost never repeat a label three times in a row.
 */
export const MAX_REPEATED_LABELS = 2;
/** Inputs longer than this (UTF-16 units) are refused before any IDNA work. */
const MAX_INPUT_LENGTH = 1024;

/** Options of `normalizeName`. */
export interface NormalizeNameOptions {
  /** Accept IPv4/IPv6 literals (returned in canonical form). Default false. */
  allowIp?: boolean;
  /** Accept `*` as the whole first label (configured names only; never for SNI). Default false. */
  allowWildcard?: boolean;
}

// Any ASCII outside the hostname alphabet, `*` (decided per label) and `.`.
// Checked on the raw input because domainToASCII parses like a URL host and
// would silently cut `a/b` to `a`.
const BAD_ASCII = /[\x00-\x29\x2b\x2c\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]/;
const LDH_LABEL = /^[a-z0-9-]+$/;
// WHATWG "ends in a number": such hosts parse as IPv4 (or fail), never as names.
const NUMERIC_LABEL = /^(?:\d+|0x[0-9a-f]*)$/i;

/**
 * Normalise a server name or throw `InvalidNameError` (with a `reason`).
 *
 * Lower-cases, drops one trailing dot, converts IDNs to A-labels (UTS #46
 * via WHATWG `domainToASCII`), then enforces: ≤ 253 octets, ≤ 10 labels,
 * labels 1–63 octets of `[a-z0-9-]` not starting or ending with `-`;
 * `xn--` labels must round-trip through Unicode, other `??--` (reserved LDH)
 * labels are refused; `*` only as the whole first label with
 * `allowWildcard`; IP literals (also `[v6]`) only with `allowIp`, and then
 * only in their strict form (`127.1`, `0x7f.0.0.1` are refused); a
 * single-label name only if it is `localhost`; no label repeated more than
 * `MAX_REPEATED_LABELS` times in a row. Idempotent on its output.
 *
 * Single-label names are refused because no public CA issues for them and
 * they are how LAN hostnames and typos arrive; `localhost` is the exception,
 * for the local CA in development (`*.localhost` has two labels anyway).
 * A wildcard's `*` counts towards the 10 labels and 253 octets.
 */
export function normalizeName(input: string, options: NormalizeNameOptions = {}): string {
  if (typeof input !== 'string' || input.length === 0) throw new InvalidNameError(String(input ?? ''), 'empty');
  if (input.length > MAX_INPUT_LENGTH) throw new InvalidNameError(input, 'too-long');

  const ip = ipLiteral(input);
  if (ip !== undefined) {
    if (!options.allowIp) throw new InvalidNameError(input, 'ip-literal', 'IP certificates are not enabled');
    return canonicalIpName(input, ip);
  }
  if (BAD_ASCII.test(input)) throw new InvalidNameError(input, 'bad-character');

  let name = domainToASCII(input);
  if (name === '') throw new InvalidNameError(input, whyIdnaFailed(input));
  if (isIP(name) !== 0) throw new InvalidNameError(input, 'ip-literal', 'not a strict IP literal');
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name === '') throw new InvalidNameError(input, 'empty');
  if (name.length > MAX_NAME_LENGTH) throw new InvalidNameError(input, 'too-long');

  const labels = name.split('.');
  if (labels.length > MAX_LABELS) throw new InvalidNameError(input, 'too-many-labels');
  labels.forEach((label, i) => checkLabel(input, label, i === 0 && options.allowWildcard === true));
  if (NUMERIC_LABEL.test(labels[labels.length - 1])) throw new InvalidNameError(input, 'numeric-tld');
  if (labels.length === 1 && name !== 'localhost') throw new InvalidNameError(input, 'single-label');
  if (hasRepeatedRun(labels)) throw new InvalidNameError(input, 'recursive-labels');
  // The caller's string when it was already normal: a million configured names are then held once, not twice.
  return name === input ? input : name;
}

function checkLabel(input: string, label: string, wildcardAllowed: boolean): void {
  if (label === '') throw new InvalidNameError(input, 'empty-label');
  if (label === '*' && wildcardAllowed) return;
  if (label.includes('*')) throw new InvalidNameError(input, 'wildcard');
  if (!LDH_LABEL.test(label)) throw new InvalidNameError(input, 'bad-character');
  if (label.length > MAX_LABEL_LENGTH) throw new InvalidNameError(input, 'label-too-long');
  if (label[2] === '-' && label[3] === '-') {
    if (!label.startsWith('xn--')) throw new InvalidNameError(input, 'reserved-label');
    // A valid A-label decodes to a U-label that encodes back to exactly itself
    // (catches `xn--abc-`, which decodes to plain `abc`).
    if (domainToASCII(domainToUnicode(label)) !== label) throw new InvalidNameError(input, 'bad-punycode');
  }
  if (label.startsWith('-') || label.endsWith('-')) throw new InvalidNameError(input, 'hyphen');
}

/** Name the rule behind an empty `domainToASCII` result, for the error's reason. */
function whyIdnaFailed(input: string): InvalidNameReason {
  const trimmed = input.endsWith('.') ? input.slice(0, -1) : input;
  const last = trimmed.slice(trimmed.lastIndexOf('.') + 1);
  if (NUMERIC_LABEL.test(last)) return 'numeric-tld';
  if (/(^|\.)xn--/i.test(input)) return 'bad-punycode';
  return 'bad-idn';
}

function hasRepeatedRun(labels: string[]): boolean {
  let run = 1;
  for (let i = 1; i < labels.length; i++) {
    run = labels[i] === labels[i - 1] ? run + 1 : 1;
    if (run > MAX_REPEATED_LABELS) return true;
  }
  return false;
}

/** The address inside `input` if it is an IP literal (`[v6]` included), else undefined. */
function ipLiteral(input: string): string | undefined {
  if (input.startsWith('[') && input.endsWith(']')) {
    const inner = input.slice(1, -1);
    return isIP(inner) === 6 ? inner : undefined; // brackets are IPv6 syntax only
  }
  return isIP(input) !== 0 ? input : undefined;
}

/** The one canonical form of an IP literal (`src/ip.ts`); zone ids (`fe80::1%eth0`) name no certificate. */
function canonicalIpName(input: string, address: string): string {
  if (address.includes('%')) throw new InvalidNameError(input, 'ip-literal', 'IPv6 zone identifiers are not allowed');
  return canonicalIp(address);
}

/**
 * True when `name` is an IPv4 or IPv6 literal (brackets allowed). A cheap
 * test for callers that route IP names differently (no DNS-01 for IPs).
 */
export function isIpLiteral(name: string): boolean {
  return ipLiteral(name) !== undefined;
}

// ─── Rejection log ─────────────────────────────────────────────────────────

/** Options of `RejectionLog`. */
export interface RejectionLogOptions {
  /** Where the summary lines go. */
  logger: Logger;
  /** At most one line per this many ms. Default 60 000. */
  intervalMs?: number;
  /** Clock, ms since epoch. Default `Date.now`. */
  now?: () => number;
  /** Log message of the summary line. Default `'rejected server names'`. */
  message?: string;
  /** Log level of the summary line. Default `'info'` (junk SNI is ordinary internet noise). */
  level?: 'debug' | 'info' | 'warn';
}

/**
 * Counts rejections by reason and logs a summary at most once per interval,
 * so a flood of hostile handshakes costs counters, not one log line each.
 *
 * The first rejection logs at once; later ones are folded into the next line,
 * written by the first rejection after the interval has passed (no timers: an
 * idle engine stays idle). Call `flush()` on shutdown to write what is pending.
 */
export class RejectionLog<R extends string = InvalidNameReason> {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #message: string;
  readonly #level: 'debug' | 'info' | 'warn';
  readonly #totals = new Map<R, number>();
  #pending = new Map<R, number>();
  #pendingCount = 0;
  #lastLineAt = -Infinity;
  // Escaped lazily (at flush), so a flood pays only for counting.
  #sample: { reason: R; raw?: string; escaped?: string; detail?: string } | undefined;
  #total = 0;

  constructor(options: RejectionLogOptions) {
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#message = options.message ?? 'rejected server names';
    this.#level = options.level ?? 'info';
  }

  /**
   * Count one rejection. `input` (escaped here) and `detail` are kept as the
   * sample shown in the next line; `detail` must already be safe to log.
   */
  record(reason: R, input: string, detail?: string): void {
    this.#count({ reason, raw: input, detail });
  }

  /** Count an `InvalidNameError` under its rule (its input is already escaped); for logs whose reasons include `InvalidNameReason`. */
  recordError(error: InvalidNameError): void {
    this.#count({ reason: error.reason as R, escaped: error.escapedInput });
  }

  #count(sample: { reason: R; raw?: string; escaped?: string; detail?: string }): void {
    const { reason } = sample;
    this.#total++;
    this.#totals.set(reason, (this.#totals.get(reason) ?? 0) + 1);
    this.#pending.set(reason, (this.#pending.get(reason) ?? 0) + 1);
    this.#pendingCount++;
    this.#sample = sample;
    if (this.#now() - this.#lastLineAt >= this.#intervalMs) this.flush();
  }

  /** Write the pending counts now, if any. */
  flush(): void {
    if (this.#pendingCount === 0) return;
    const sample = this.#sample!;
    this.#logger[this.#level](
      {
        rejected: Object.fromEntries(this.#pending),
        count: this.#pendingCount,
        sample: sample.escaped ?? escapeForLog(sample.raw ?? ''),
        sampleReason: sample.reason,
        ...(sample.detail === undefined ? {} : { sampleDetail: sample.detail }),
      },
      this.#message,
    );
    this.#pending = new Map();
    this.#pendingCount = 0;
    this.#lastLineAt = this.#now();
  }

  /** Rejections counted since creation, by reason (for metrics). */
  counts(): Partial<Record<R, number>> {
    return Object.fromEntries(this.#totals) as Partial<Record<R, number>>;
  }

  /** Total rejections counted since creation. */
  get total(): number {
    return this.#total;
  }
}

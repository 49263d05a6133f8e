/**
 * Permission for on-demand issuance: who may make us order a certificate for
 * a name nobody configured. Anyone can open a TLS connection with any SNI,
 * so the gate fails closed, caches decisions with TTLs in a bounded LRU,
 * makes concurrent identical decisions once, and keeps a global token bucket
 * for issuance of new names, so the CA's rate limits are ours to spend.
 *
 * Permission and budget are separate calls on purpose: `check()` says whether
 * a name may have a certificate at all (asked on a handshake for an unknown
 * name, and again before renewals and retries), `takeIssuanceToken()` is
 * taken before an attempt for a new name locks anything, and given back when
 * no order was placed after all (a stored certificate was found; not for renewals).
 */
import type { Logger } from 'pino';
import { ConfigError, OnDemandRefusedError, escapeForLog, type OnDemandRefusal } from '../errors.js';
import { RejectionLog } from '../names.js';
import { TokenBucket } from './token-bucket.js';

export { OnDemandRefusedError, type OnDemandRefusal };

/** What a decision is told about the handshake that asked. */
export interface DecisionInfo {
  /** The raw SNI value as the client sent it (untrusted: escape before logging). */
  servername: string;
  /** The client's address, when known. */
  remoteAddress?: string;
}

/** On-demand issuance settings (`createCertEngine({ onDemand })`). At least one of `decide` and `ask` is required. */
export interface OnDemandOptions {
  /**
   * Your decision: resolve `true` to allow a certificate for `name` (already
   * normalised). Anything else refuses; a throw, rejection, non-boolean or
   * timeout refuses too (fail closed). Decisions are cached per name, so the
   * answer should depend on `name` only; `info` is the first asker's.
   */
  decide?: (name: string, info: DecisionInfo) => boolean | Promise<boolean>;
  /**
   * A permission endpoint (http or https), as in Caddy: `GET <ask>?domain=<name>`
   * (added to any query the URL already has). A 2xx allows; any other 4xx
   * denies; redirects are not followed and, like 5xx, 408, 429, network
   * errors and timeouts, count as a failed decision (refused, cached briefly).
   * If `decide` is also set, both must allow (`decide` is asked first).
   */
  ask?: string;
  /**
   * Pause a name that has been failing this long with no certificate to serve,
   * like Let's Encrypt's paused identifiers: no more orders until
   * `forceRenew` or a handshake after the pause, for which permission is asked
   * afresh, gives it one attempt (a success ends the pause; a failure pauses it
   * again after its backoff). Shown as `paused` in `status()`. ms; default
   * 259 200 000 (3 days).
   */
  pauseAfterMs?: number;
  /** Deadline of one `ask` request, ms. Default 10 000. */
  askTimeoutMs?: number;
  /** Deadline of one `decide` call, ms; a hung decision must not pin a name forever. Default 10 000. */
  decideTimeoutMs?: number;
  /** How long an allow is cached, ms. Default 3 600 000 (1 h). 0 disables. */
  cacheTtlMs?: number;
  /** How long a denial is cached, ms. Default 300 000 (5 min). 0 disables. */
  negativeCacheTtlMs?: number;
  /**
   * How long a failed decision (error, timeout, endpoint down) is cached as a
   * refusal, ms: short, so an outage ends quickly for real customers while a
   * flood still cannot hammer the decision. Default 10 000, capped at `negativeCacheTtlMs`.
   */
  errorCacheTtlMs?: number;
  /** Most cached decisions (LRU beyond that). Default 10 000. */
  maxCacheEntries?: number;
  /** Most decisions in flight at once; checks beyond it are refused (`overloaded`) without asking. Default 1 000. */
  maxPendingDecisions?: number;
  /**
   * Global budget for issuing certificates for new on-demand names (token
   * bucket). Default burst 20, then one every 36 s (`refillPerSecond`
   * 1/36 ≈ 100 per hour), which is Let's Encrypt's new-order refill rate per
   * account, so on-demand alone can never exhaust the account.
   */
  rateLimit?: {
    /** Orders allowed at once after a quiet period. Default 20. */
    burst?: number;
    /** Orders added to the budget per second. Default 1/36. */
    refillPerSecond?: number;
  };
}

/** What the gate needs from the engine. */
export interface OnDemandDeps {
  /** Clock for cache TTLs and the token bucket, ms since epoch. */
  now(): number;
  /** Where refusal summaries go (at most one line per minute per kind). */
  logger: Logger;
  /** `fetch` to call the `ask` endpoint with. Default the global `fetch`. */
  fetch?: typeof fetch;
  /** Aborts `ask` requests in flight (the engine stopped); such a decision fails, closed. */
  signal?: AbortSignal;
}

/** Counters for metrics. */
export interface OnDemandStats {
  /** Decisions currently cached. */
  cacheEntries: number;
  /** Decisions currently being made. */
  inFlight: number;
  /** Decisions made (cache misses that ran `decide`/`ask`). */
  decisions: number;
  /** Refused checks and issuance tokens since creation, by reason. */
  refusals: Partial<Record<OnDemandRefusal, number>>;
  /** Issuance tokens available now. */
  issuanceTokens: number;
}

/** The on-demand permission gate. */
export interface OnDemandGate {
  /**
   * Resolve if `name` (normalised) may have a certificate; reject with
   * `OnDemandRefusedError` (`denied`, `decision-failed` or `overloaded`)
   * otherwise. Consumes no issuance budget.
   */
  check(name: string, info: DecisionInfo): Promise<void>;
  /**
   * Spend one unit of the global issuance budget for a new on-demand name;
   * `false` (counted as `rate-limited`) when it is spent. Call it right
   * before the first order for a name with no stored certificate.
   */
  takeIssuanceToken(name: string): boolean;
  /** Give back a token taken by `takeIssuanceToken` when no order was placed after all. */
  returnIssuanceToken(): void;
  /** When the next issuance token is available, ms since epoch (for `retryAfter`). */
  nextIssuanceTokenAt(): number;
  /** Drop the cached decision for `name` (a decision already in flight still lands). */
  forget(name: string): void;
  /** Counters for metrics. */
  stats(): OnDemandStats;
  /** Write pending refusal summaries now (call on engine stop). */
  flushLog(): void;
}

type Decision =
  | { allowed: true }
  | { allowed: false; reason: 'denied' }
  | { allowed: false; reason: 'decision-failed'; cause: unknown };

interface CacheEntry {
  decision: Decision;
  expiresAt: number;
}

const ALLOW: Decision = { allowed: true };
const DENY: Decision = { allowed: false, reason: 'denied' };
const DEFAULT_RATE = { burst: 20, refillPerSecond: 1 / 36 };
/** Default of `onDemand.pauseAfterMs`: 3 days of failing with nothing to serve. */
export const DEFAULT_PAUSE_AFTER_MS = 3 * 86_400_000;

/**
 * Create the on-demand gate. Throws `ConfigError` when neither `decide` nor
 * `ask` is set, or when a setting is invalid (checked here, not at the first
 * handshake).
 */
export function createOnDemandGate(options: OnDemandOptions, deps: OnDemandDeps): OnDemandGate {
  const settings = validate(options);
  const fetchFn = deps.fetch ?? globalThis.fetch;
  const bucket = new TokenBucket({ ...DEFAULT_RATE, ...definedOnly(options.rateLimit), now: () => deps.now() });
  const cache = new Map<string, CacheEntry>(); // insertion order = LRU order
  const inFlight = new Map<string, Promise<Decision>>();
  // Denials are routine (scanners); failures and budget exhaustion need an operator.
  const deniedLog = new RejectionLog<OnDemandRefusal>({ logger: deps.logger, now: deps.now, message: 'on-demand issuance denied' });
  const troubleLog = new RejectionLog<OnDemandRefusal>({
    logger: deps.logger,
    now: deps.now,
    level: 'warn',
    message: 'on-demand issuance refused',
  });
  let decisions = 0;

  function refuse(name: string, reason: OnDemandRefusal, cause?: unknown, retryAfter?: number): OnDemandRefusedError {
    const detail = cause === undefined ? undefined : escapeForLog(describe(cause), 200);
    (reason === 'denied' ? deniedLog : troubleLog).record(reason, name, detail);
    return new OnDemandRefusedError(name, reason, { cause, retryAfter });
  }

  function cached(name: string): Decision | undefined {
    const entry = cache.get(name);
    if (entry === undefined) return undefined;
    cache.delete(name);
    if (entry.expiresAt <= deps.now()) return undefined;
    cache.set(name, entry); // most recently used
    return entry.decision;
  }

  function remember(name: string, decision: Decision): void {
    const ttl = decision.allowed
      ? settings.cacheTtlMs
      : decision.reason === 'denied'
        ? settings.negativeCacheTtlMs
        : settings.errorCacheTtlMs;
    cache.delete(name);
    if (ttl <= 0 || settings.maxCacheEntries === 0) return;
    cache.set(name, { decision, expiresAt: deps.now() + ttl });
    if (cache.size > settings.maxCacheEntries) cache.delete(cache.keys().next().value!);
  }

  async function decideNow(name: string, info: DecisionInfo): Promise<Decision> {
    decisions++;
    let decision: Decision = ALLOW;
    if (options.decide) decision = await callDecide(options.decide, name, info, settings.decideTimeoutMs);
    if (decision.allowed && settings.askUrl) decision = await askEndpoint(fetchFn, settings.askUrl, name, settings.askTimeoutMs, deps.signal);
    remember(name, decision);
    return decision;
  }

  return {
    async check(name, info) {
      let decision = cached(name);
      if (decision === undefined) {
        let pending = inFlight.get(name);
        if (pending === undefined) {
          if (inFlight.size >= settings.maxPendingDecisions) throw refuse(name, 'overloaded');
          pending = decideNow(name, info).finally(() => inFlight.delete(name));
          inFlight.set(name, pending);
        }
        decision = await pending;
      }
      if (!decision.allowed) throw refuse(name, decision.reason, decision.reason === 'decision-failed' ? decision.cause : undefined);
    },
    takeIssuanceToken(name) {
      if (bucket.tryTake()) return true;
      troubleLog.record('rate-limited', name);
      return false;
    },
    returnIssuanceToken: () => bucket.giveBack(),
    nextIssuanceTokenAt: () => bucket.nextTokenAt(),
    forget(name) {
      cache.delete(name);
    },
    stats() {
      return {
        cacheEntries: cache.size,
        inFlight: inFlight.size,
        decisions,
        refusals: { ...deniedLog.counts(), ...troubleLog.counts() },
        issuanceTokens: bucket.available(),
      };
    },
    flushLog() {
      deniedLog.flush();
      troubleLog.flush();
    },
  };
}

async function callDecide(
  decide: NonNullable<OnDemandOptions['decide']>,
  name: string,
  info: DecisionInfo,
  timeoutMs: number,
): Promise<Decision> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`onDemand.decide did not answer within ${timeoutMs} ms`)), timeoutMs);
      timer.unref();
    });
    // `Promise.resolve().then` turns a synchronous throw into a rejection.
    const answer: unknown = await Promise.race([Promise.resolve().then(() => decide(name, info)), deadline]);
    if (answer === true) return ALLOW;
    if (answer === false) return DENY;
    return { allowed: false, reason: 'decision-failed', cause: new TypeError(`onDemand.decide returned ${typeof answer}, not a boolean`) };
  } catch (cause) {
    return { allowed: false, reason: 'decision-failed', cause };
  } finally {
    clearTimeout(timer);
  }
}

async function askEndpoint(fetchFn: typeof fetch, askUrl: URL, name: string, timeoutMs: number, stop: AbortSignal | undefined): Promise<Decision> {
  const url = new URL(askUrl);
  url.searchParams.set('domain', name);
  try {
    // redirect: 'manual' — a redirect must not move the decision to a URL the operator did not configure.
    const deadline = AbortSignal.timeout(timeoutMs);
    const response = await fetchFn(url, { redirect: 'manual', signal: stop ? AbortSignal.any([stop, deadline]) : deadline });
    await response.body?.cancel().catch(() => undefined); // only the status matters; free the socket
    const status = response.status;
    if (status >= 200 && status < 300) return ALLOW;
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) return DENY;
    return { allowed: false, reason: 'decision-failed', cause: new Error(`ask endpoint answered HTTP ${status}`) };
  } catch (cause) {
    return { allowed: false, reason: 'decision-failed', cause };
  }
}

interface Settings {
  askUrl: URL | undefined;
  askTimeoutMs: number;
  decideTimeoutMs: number;
  cacheTtlMs: number;
  negativeCacheTtlMs: number;
  errorCacheTtlMs: number;
  maxCacheEntries: number;
  maxPendingDecisions: number;
}

function validate(options: OnDemandOptions): Settings {
  if (options.decide === undefined && options.ask === undefined) {
    throw new ConfigError('on-demand issuance needs a decision: set onDemand.decide or onDemand.ask');
  }
  if (options.decide !== undefined && typeof options.decide !== 'function') {
    throw new ConfigError('onDemand.decide must be a function');
  }
  const negativeCacheTtlMs = duration('negativeCacheTtlMs', options.negativeCacheTtlMs, 300_000);
  return {
    askUrl: options.ask === undefined ? undefined : askUrl(options.ask),
    askTimeoutMs: duration('askTimeoutMs', options.askTimeoutMs, 10_000, 1),
    decideTimeoutMs: duration('decideTimeoutMs', options.decideTimeoutMs, 10_000, 1),
    cacheTtlMs: duration('cacheTtlMs', options.cacheTtlMs, 3_600_000),
    negativeCacheTtlMs,
    errorCacheTtlMs: Math.min(duration('errorCacheTtlMs', options.errorCacheTtlMs, 10_000), negativeCacheTtlMs),
    maxCacheEntries: count('maxCacheEntries', options.maxCacheEntries, 10_000, 0),
    maxPendingDecisions: count('maxPendingDecisions', options.maxPendingDecisions, 1_000, 1),
  };
}

function askUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError('onDemand.ask is not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`onDemand.ask must be an http or https URL, not ${escapeForLog(url.protocol, 20)}`);
  }
  // fetch refuses URLs with credentials; say so now rather than fail closed forever.
  if (url.username !== '' || url.password !== '') {
    throw new ConfigError('onDemand.ask must not contain credentials (user:password@)');
  }
  url.hash = '';
  return url;
}

function duration(field: string, value: number | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new ConfigError(`onDemand.${field} must be a finite number ≥ ${min} (ms)`);
  }
  return value;
}

function count(field: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) throw new ConfigError(`onDemand.${field} must be an integer ≥ ${min}`);
  return value;
}

function definedOnly<T extends object>(value: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(value ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch wraps the useful part ("connect ECONNREFUSED …") in `cause`.
  const inner = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.name}: ${error.message}${inner}`;
}

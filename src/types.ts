/**
 * Public contracts of certstate: storage, issuers, clocks, and the metadata the
 * engine keeps about certificates. Everything here is implementable by third
 * parties with no private imports.
 */
import type { Logger } from 'pino';

export type { Logger };

// ─── Certificates ──────────────────────────────────────────────────────────

/** PEM material of one certificate: never placed in machine context, events or logs. */
export interface CertificateBundle {
  /** The leaf certificate followed by its chain, PEM. */
  certificatePem: string;
  /** The leaf's private key, PEM (PKCS#8 or traditional). */
  privateKeyPem: string;
}

/**
 * What the engine knows about a certificate without its key: safe for context,
 * inspector, events, logs and `status()`.
 */
export interface CertificateMeta {
  /** SHA-256 fingerprint of the leaf DER, upper-case hex with colons (as node:crypto prints it). */
  fingerprint: string;
  /** Leaf serial number, upper-case hex. */
  serial: string;
  /** DNS names (and IPs) the certificate covers. */
  names: string[];
  /** Start of validity, ms since epoch. */
  notBefore: number;
  /** End of validity, ms since epoch. */
  notAfter: number;
  /** Issuer distinguished name of the leaf, as text. */
  issuer: string;
  /** `id` of the certstate issuer that obtained it (`unknown` for imported). */
  issuerId: string;
  /** ARI certificate identifier (RFC 9773), when the leaf carries an Authority Key Identifier. */
  ariCertId?: string;
}

// ─── Storage ───────────────────────────────────────────────────────────────

/** Metadata of one stored blob. */
export interface StorageStat {
  /** Size in bytes of the stored value. */
  size: number;
  /** Last modification, ms since epoch. */
  modified: number;
}

/** A fence presented with a write: the write is refused if the lock was since taken by someone else. */
export interface Fence {
  /** The lock key the fencing token belongs to. */
  lockKey: string;
  /** The token returned by `lock()`. */
  token: number;
}

/** Options for `Storage.store`. */
export interface StoreOptions {
  /** Refuse the write (with `FencingError`) if `fence.token` is no longer the newest token of `fence.lockKey`. */
  fence?: Fence;
}

/** Options for `Storage.delete`. */
export interface DeleteOptions {
  /**
   * Refuse the delete (with `FencingError`) if `fence.token` is no longer the
   * newest token of `fence.lockKey`: a holder that lost its lock cannot remove
   * what the next holder wrote (e.g. a challenge record).
   */
  fence?: Fence;
}

/** A held storage lock with a lease. */
export interface StorageLock {
  /** Key the lock was taken on. */
  readonly key: string;
  /**
   * Present it with writes made under the lock. A token is never handed out
   * twice for one lock key, even after the storage lost its data (the shipped
   * storages draw `max(previous + 1, the storage clock in µs)`), and a safe
   * integer (below 2^53).
   */
  readonly fencingToken: number;
  /** Extend the lease by its TTL from now. Rejects with `LockLostError` if the lease was lost. */
  renew(): Promise<void>;
  /** Release the lock (idempotent; a lost lock is released silently). */
  release(): Promise<void>;
}

/** Options for `Storage.lock`. */
export interface LockOptions {
  /** Abort waiting for the lock. */
  signal?: AbortSignal;
}

/**
 * Keyed blob storage shared by every process of a cluster.
 *
 * Keys are `/`-separated segments of `[A-Za-z0-9._-]` (no `.`/`..` segments);
 * implementations must reject anything else with `InvalidKeyError`.
 */
export interface Storage {
  /** A short description for logs, e.g. `file:/var/lib/certstate`. */
  readonly description: string;
  /** Read a value; `undefined` when absent. */
  load(key: string): Promise<string | undefined>;
  /** Write a value atomically: readers see the old or the new value, never a mix. */
  store(key: string, value: string, options?: StoreOptions): Promise<void>;
  /** Delete a value (absent is not an error). Fenced like `store` when `options.fence` is given. */
  delete(key: string, options?: DeleteOptions): Promise<void>;
  /** Keys starting with `prefix`, in no particular order. */
  list(prefix: string): Promise<string[]>;
  /**
   * Optional bulk read: every key starting with `prefix` with its value, in
   * batches, in no particular order — one listing, query or scan instead of
   * one `load` per key (the engine's start-up reads every stored certificate
   * this way when it can; storages without it are read key by key). A value
   * written while the iteration runs may or may not be seen; each value seen
   * is whole (as `load` would return it). Stopping the iteration early
   * (`break`) releases what it holds.
   */
  entries?(prefix: string, options?: EntriesOptions): AsyncIterable<ReadonlyArray<StorageEntry>>;
  /**
   * Optional (file storage): where the engine keeps its start-up index, and
   * the cheap version checks that let it trust the index only as far as the
   * files still are what it describes. See {@link StartupIndexStorage}.
   */
  readonly startupIndex?: StartupIndexStorage;
  /** Size and modification time, or `undefined` when absent. */
  stat(key: string): Promise<StorageStat | undefined>;
  /**
   * Take an exclusive lock with a lease of `ttlMs`, waiting until it is free.
   * A holder that stops renewing loses it after the TTL.
   */
  lock(key: string, ttlMs: number, options?: LockOptions): Promise<StorageLock>;
  /**
   * The storage's own clock, ms since epoch (Redis `TIME`, PostgreSQL `now()`,
   * the filesystem's timestamps). Every process of a cluster compares shared
   * times (backoff records) on this one clock, not on its own wall clock.
   * Optional: without it, the process's clock is used.
   */
  now?(): Promise<number>;
  /** Release connections and timers (optional). */
  close?(): Promise<void>;
  /**
   * Load what the backend needs before its first call (e.g. its driver, an
   * optional peer package), without connecting. `engine.start()` awaits it,
   * so a missing driver rejects `start()` with a `ConfigError`.
   */
  prepare?(): Promise<void>;
  /**
   * Remove the backend's own debris that no key names (optional): file
   * storage's temp files of crashed writes, lock directories of locks
   * nobody holds, and the tombstones of fenced deletes. Only what was last written before `options.before` goes,
   * and never a lock still held or a write that may be in flight. The storage
   * cleaner calls it once per interval for the whole cluster.
   */
  sweep?(options: SweepOptions): Promise<SweepResult>;
}

/** Options of `Storage.entries`. */
export interface EntriesOptions {
  /** Only keys this accepts need be read (a storage may read others all the same: the caller checks). */
  only?(key: string): boolean;
}

/**
 * One value of `Storage.entries`: its key, its value, and (file storage) the
 * value's version as {@link StartupIndexStorage.versions} gives it, taken
 * from the same read, so the value is the content of that version.
 */
export type StorageEntry = readonly [key: string, value: string, version?: string];

/**
 * A storage's start-up index (file storage): one file the engine writes and
 * reads back whole at start-up instead of one read per certificate, and the
 * version of each value — a cheap identity that changes whenever the value
 * may have changed (file storage: size, inode, modification and change times
 * from `stat`). The index is a cache: the engine trusts an entry only while
 * the value's version is the one the entry was made from (checked after
 * start-up, in the background), and never for serving.
 */
export interface StartupIndexStorage {
  /**
   * The index's lines in batches, streamed; nothing when there is none.
   * Throws `CorruptStorageError` when it is larger than `maxBytes` or not
   * valid UTF-8, `StorageError` when it cannot be read.
   */
  read(maxBytes: number): AsyncIterable<string[]>;
  /** Replace the index with these lines, atomically (readers see the old or the new index whole). */
  write(lines: AsyncIterable<string[]>): Promise<void>;
  /** Every key under `prefix` with its value's version, in batches (one listing and a `stat` per key, no read). */
  versions(prefix: string): AsyncIterable<ReadonlyArray<readonly [key: string, version: string]>>;
  /** A value with the version it was read at; undefined when absent. */
  loadVersioned(key: string): Promise<{ value: string; version: string } | undefined>;
}

/** Options of `Storage.sweep`. */
export interface SweepOptions {
  /** Debris last written before this time (ms since epoch) may be removed. */
  before: number;
  /** Stop early (the engine is stopping). */
  signal?: AbortSignal;
}

/** What a `Storage.sweep` removed. */
export interface SweepResult {
  /** Files, directories or entries removed. */
  removed: number;
  /** Bytes they held (as far as the backend can tell). */
  bytes: number;
}

// ─── Issuers ───────────────────────────────────────────────────────────────

/** What to issue. */
export interface IssueRequest {
  /** Names the certificate must cover; the first is the primary name. */
  names: string[];
  /** ARI certificate id of the certificate this one replaces (RFC 9773 `replaces`). */
  replaces?: string;
  /** ACME profile to request, when the issuer supports profiles. */
  profile?: string;
}

/** Environment handed to an issuer for one attempt. */
export interface IssueContext {
  /** Aborted when the attempt is abandoned (engine stop); honour it at every step. */
  signal: AbortSignal;
  /** A child logger for this attempt. Never log key material with it. */
  logger: Logger;
  /** The engine's storage: accounts, challenge tokens. */
  storage: Storage;
  /** The engine's clock (ms since epoch). */
  now(): number;
  /**
   * The fence of the attempt's issuance lock. Records written for this one
   * name (a TLS-ALPN-01 challenge) are stored and deleted with it, so a holder
   * that lost its lock cannot overwrite or remove the next holder's.
   */
  fence?: Fence;
}

/** ARI suggested renewal window (RFC 9773). */
export interface RenewalInfo {
  /** Window start, ms since epoch. */
  start: number;
  /** Window end, ms since epoch. */
  end: number;
  /** When to ask again, ms since epoch (already clamped by the issuer or the engine). */
  retryAfter?: number;
  /** A URL explaining the window (e.g. a revocation incident). */
  explanationUrl?: string;
}

/**
 * Something that issues certificates: an ACME CA, a local CA, a test double.
 *
 * Errors thrown by `issue` may carry `retryAfter` (a `Date`, or seconds as a
 * number) which the engine uses as the floor of its backoff.
 */
export interface Issuer {
  /** Stable identifier, e.g. `acme:https://acme-v02.api.letsencrypt.org/directory`. */
  readonly id: string;
  /** Obtain a certificate for `request.names`. */
  issue(request: IssueRequest, context: IssueContext): Promise<CertificateBundle>;
  /** ARI: the CA's suggested renewal window for a certificate it issued, or `undefined` if none. */
  renewalInfo?(certificate: CertificateMeta, context: IssueContext): Promise<RenewalInfo | undefined>;
  /**
   * Load what `issue()` needs (a client library), before the engine serves:
   * `engine.start()` awaits it, so the loading happens neither at import
   * time nor inside an attempt that holds the issuance lock.
   */
  prepare?(): Promise<void>;
  /**
   * The ACME challenge types this issuer may have answered by the engine's
   * servers (`httpChallengeHandler()`, `tlsOptions()`); `[]` for none (a local
   * CA). Read once, when the engine is created. Leave it out and the engine
   * assumes TLS-ALPN-01 may be used: `tlsOptions()` then keeps the JS ALPN
   * callback that answers it (see `TlsOptionsConfig.tlsAlpn01`).
   */
  readonly challenges?: readonly ChallengeType[];
}

/** ACME challenge types (RFC 8555 §8, RFC 8737). */
export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01';

// ─── Time ──────────────────────────────────────────────────────────────────

/** Opaque timer handle returned by a `Clock`. */
export type TimerHandle = { readonly __timer: unique symbol } | object;

/**
 * All time in certstate goes through a clock, so tests can simulate it and so
 * long waits are split below `setTimeout`'s 2^31−1 ms limit.
 * Shape-compatible with XState's `Clock` (`setTimeout`/`clearTimeout`).
 */
export interface Clock {
  /** Milliseconds since epoch. */
  now(): number;
  /** Call `fn` after `delayMs` (any length; never early). */
  setTimeout(fn: () => void, delayMs: number): TimerHandle;
  /** Cancel a timer (unknown or fired handles are ignored). */
  clearTimeout(handle: TimerHandle): void;
}

// ─── Status ────────────────────────────────────────────────────────────────

/**
 * Lifecycle state names, as the statechart names them (`attempting`'s
 * children by their own names; `failed-backoff`'s serving and refusing
 * substates as `failed-backoff`).
 */
export type LifecycleState =
  | 'loading'
  | 'obtaining'
  | 'valid'
  | 'renewing'
  | 'expired-renewing'
  | 'failed-backoff'
  | 'storage-unreadable'
  | 'paused'
  | 'stopped';

/** Every lifecycle state, in the order a name usually meets them. */
export const LIFECYCLE_STATES: readonly LifecycleState[] = ['loading', 'obtaining', 'valid', 'renewing', 'expired-renewing', 'failed-backoff', 'storage-unreadable', 'paused', 'stopped'];

/** A recorded error, safe to show (no secrets). */
export interface ErrorInfo {
  /** Error class name, e.g. `AcmeRateLimitedError`. */
  type: string;
  /** Human-readable message. */
  message: string;
  /** The error's `code` (certstate's own, stable per error class). */
  code?: string;
  /** The CA's problem type (an RFC 8555 URN), when a CA refused. */
  problemType?: string;
  /** The CA's problem detail, when there is one. */
  detail?: string;
  /** The earliest time the CA allows another attempt, ms since epoch. */
  retryAfter?: number;
  /**
   * With several issuers: per issuer id, the CA's Retry-After still in force
   * (ms since epoch). Later attempts skip that issuer until then and try the others.
   */
  issuerRetryAfter?: Record<string, number>;
  /** When the error happened, ms since epoch. */
  at: number;
}

/** One name's status, as `engine.status()` reports it. */
export interface NameStatus {
  /** The name; for a certificate of several names, its first (the key it is stored, locked and renewed under). */
  name: string;
  /** Every name of the certificate when it has several (`names: [['example.com', '*.example.com']]`), `name` first. */
  names?: string[];
  state: LifecycleState;
  /** Whether the name is managed (configured) or on-demand. */
  managed: boolean;
  certificate?: CertificateMeta;
  /** When renewal is due, ms since epoch. */
  renewAt?: number;
  /** Consecutive failed attempts. */
  attempts: number;
  lastError?: ErrorInfo;
  /** Earliest next attempt during backoff, ms since epoch (none while `paused`). */
  nextAttemptAt?: number;
  /** Since when the name has been failing (first failure since its last certificate), ms since epoch. */
  failingSince?: number;
}

/**
 * The engine's public option and result types, apart from the engine itself
 * (`engine.ts` re-exports them).
 */
import type { SecureContext } from 'node:tls';
import type { InspectionEvent, Observer } from 'xstate';
import type { TimingPolicy } from '../machines/policy.js';
import type { CertificateMeta, Clock, Issuer, Logger, Storage } from '../types.js';
import type { ManagedEntry } from './managed-names.js';
import type { OnDemandOptions } from './on-demand.js';
import type { SessionTicketOptions } from './session-tickets.js';
import type { StorageCleanerOptions } from './storage-cleaner.js';
import type { StartupIndexOptions } from './startup-index.js';

/** Options of `createCertEngine`. */
export interface CertEngineOptions {
  /**
   * Where certificates, keys, failure records and locks live; processes
   * sharing a storage form one cluster. Default: `fileStorage('./certstate-data')`.
   */
  storage?: Storage;
  /** Issuers tried in order within one attempt (e.g. Let's Encrypt, then ZeroSSL). At least one. */
  issuers: Issuer[];
  /**
   * Managed names: obtained at start and kept renewed. `*.example.com`
   * wildcards allowed. Each entry is one certificate: a string for that name
   * alone, an array for ONE certificate covering all its names, e.g.
   * `['shop.test', ['example.com', '*.example.com']]` (stored, locked and
   * shown under its first name; a handshake for any of its names, or a name
   * its wildcard covers, is served that certificate). A name belongs to one
   * entry; a group holds at most 100 names, none covered by its own wildcard.
   */
  names?: ManagedEntry[];
  /**
   * The managed name whose certificate answers clients that send no SNI
   * (health checks by IP address). Node runs no callback for such a client
   * unless it offers ALPN, so this covers TLS 1.3 clients offering ALPN
   * (curl, browsers, Go and most HTTP health checkers); one that sends
   * neither SNI nor ALPN gets the server's default `key`/`cert` if it has
   * one, else a `handshake_failure` alert. Must be one of `names`. Setting it
   * gives `tlsOptions()` the JS `ALPNCallback` (where it is presented) instead
   * of `ALPNProtocols`.
   */
  defaultName?: string;
  /**
   * On-demand issuance: a handshake for an unmanaged name asks `decide` and/or
   * the `ask` endpoint; if allowed (and within the issuance budget), a
   * certificate is obtained during the handshake. See `OnDemandOptions`.
   */
  onDemand?: OnDemandOptions;
  /** Longest time a handshake waits for an attempt in flight, ms (default 30,000). The attempt goes on. */
  handshakeTimeout?: number;
  /**
   * Longest time `forceRenew` waits for the outcome of the attempt it asked
   * for, ms (default 300,000). It then rejects with `OperatorTimeoutError`;
   * the attempt goes on. `forceRenew(name, { timeoutMs })` overrides it per call.
   */
  operatorTimeout?: number;
  /**
   * Longest an issuance attempt may run, ms (default 600,000). Past it the
   * attempt is aborted and fails with `AttemptTimeoutError` (the normal
   * backoff follows), its slot is freed at once, and whatever its issuer
   * returns later is discarded, never stored. Counted from when the attempt
   * gets one of the engine's issuance slots: a wait for a slot is bounded by
   * the attempts ahead of it, each bounded by this.
   */
  attemptTimeout?: number;
  /** Most handshakes waiting per name (default 10,000); more are refused at once with `TooManyWaitersError`. */
  maxWaitersPerName?: number;
  /** Most handshakes waiting in total (default 100,000). */
  maxWaiters?: number;
  /** During backoff with only an expired certificate, serve it instead of failing the handshake (default false). */
  serveExpired?: boolean;
  /** A pino logger; certstate derives children and never changes its level or redaction. Default: silent. */
  logger?: Logger;
  /** XState inspection observer, passed to every per-name actor (ids `cert:<name>`). */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /** The clock for every delay (default: the real clock, safe for waits beyond 24.8 days). */
  clock?: Clock;
  /** Randomness for jitter, uniform in [0, 1) (default `Math.random`). */
  random?: () => number;
  /** Renewal and backoff tunables (defaults in `defaultTimingPolicy`). */
  timing?: Partial<TimingPolicy>;
  /** Lease of the per-name issuance lock, ms (default 60,000; renewed while the attempt runs). */
  lockTtlMs?: number;
  /** How long `stop()` waits for storage and issuer calls in flight, real-time ms (default 10,000). */
  stopTimeoutMs?: number;
  /**
   * Most certificates whose key material (PEMs and the built `SecureContext`:
   * ~40 KB of OpenSSL memory each) stays in memory (default 10,000). Beyond it
   * the least recently served is dropped, and read from storage again at its
   * next handshake (one read per name, however many handshakes wait for it).
   */
  cacheCapacity?: number;
  /**
   * Most names kept as running statechart actors (~7 KB each; default 1,000).
   * Beyond it, names that are `valid` with nothing in flight sleep as a
   * ~1.3 KB record, least recently active first: they are served exactly like
   * live names, and wake (their actor is restored from the record) at their
   * renewal time, on an ARI hint, a storage change, or an operator's action.
   * Names still loading, in an attempt or in backoff are never put to sleep.
   * `0`: every `valid` name sleeps (least memory; no actors to inspect at rest).
   */
  maxLiveActors?: number;
  /**
   * TLS session tickets that resume on every process sharing the storage:
   * keys kept in storage, a new one encrypting every `rotationIntervalMs`
   * (12 h), the previous ones still decrypting for `overlapMs` (12 h). On by
   * default; `false` leaves tickets to Node (a random key per server, never
   * rotated: sessions resume only on the process that issued them). See
   * `CertEngine.tlsOptions()` and `CertEngine.attachServer()`.
   */
  sessionTickets?: SessionTicketOptions | false;
  /**
   * Keep storage bounded: once every `intervalMs` (24 h) one process of the
   * cluster removes certificates that expired more than `gracePeriodMs`
   * (14 days) ago and belong to names no longer managed or allowed, their
   * failure records, old challenge tokens, and lock and temp debris
   * (`Storage.sweep`). Names this process manages or holds are never
   * touched. On by default; `false` turns it off.
   */
  storageCleaner?: StorageCleanerOptions | false;
  /**
   * The start-up index (file storage and PostgreSQL; Redis reads in bulk):
   * with more names than `maxLiveActors`, start-up puts names to sleep from
   * one index holding every name's certificate metadata and the version of
   * the value it came from (file storage: a file; PostgreSQL: the table
   * `<table>_index`), instead of reading a million certificates; afterwards,
   * in the background, each value's version (a file's `stat`, a row's `xmin`
   * and `modified`) is compared with the index's and a changed one is read
   * and parsed. A cache, never the truth:
   * nothing is served from it, a stale or corrupt index costs reads, not
   * correctness. Written after that check, at most every `writeIntervalMs`
   * (10 minutes) while names changed, and at `stop()`. On by default;
   * `false` turns it off (every start reads every certificate).
   */
  startupIndex?: StartupIndexOptions | false;
}

/** Options of `CertEngine.start()`. */
export interface StartOptions {
  /**
   * Resolve only once every managed name has been read from storage (default
   * true). With `false`, `start()` resolves as soon as handshakes can be
   * served; names are read in the background, and a handshake for a name not
   * read yet reads it first (ahead of the background reads). At 100,000 names
   * the background read takes ~17 s on file storage (BENCHMARKS.md).
   */
  waitForStorage?: boolean;
}

/** A certificate ready to serve. */
export interface ServedCertificate {
  meta: CertificateMeta;
  /** Built once per certificate and shared by every handshake. */
  secureContext: SecureContext;
  /**
   * The leaf certificate and its chain, PEM. The engine keeps PEMs as bytes
   * outside the JS heap: each read decodes a fresh string (an own enumerable
   * getter, so a spread or `JSON.stringify` sees a field). It stays readable
   * after the engine forgets the certificate.
   */
  certificatePem: string;
  /** The leaf's private key, PEM: read like `certificatePem`. Never log it. */
  privateKeyPem: string;
  /** True when an expired certificate is served (only with `serveExpired`). */
  expired: boolean;
}

/** What the engine holds in memory (`engine.stats`): for capacity planning and metrics. */
export interface EngineStats {
  /** Names known: managed, and on-demand names admitted. */
  names: number;
  /** Names with a running statechart actor. */
  liveActors: number;
  /** Names sleeping as a record (`valid`, nothing in flight), waking at their renewal time. */
  sleeping: number;
  /** Certificates whose key material is in memory (bounded by `cacheCapacity`). */
  cachedCertificates: number;
  /** Handshakes waiting for an attempt in flight. */
  waitingHandshakes: number;
}

/** Details of a handshake, for on-demand decisions and logs. */
export interface HandshakeInfo {
  remoteAddress?: string;
}

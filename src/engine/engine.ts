/**
 * The certificate engine: a `Map<name, actor>` of independent root actors
 * (one lifecycle statechart per name), the effects those statecharts name,
 * and the TLS handshake path that asks them for certificates.
 *
 * Per-name actors are roots, not children of one parent: XState stops N
 * children in O(N²). The machine is `provide`d once per engine (not per name);
 * its effects find their name's record through `context.name`.
 */
import { EventEmitter } from 'node:events';
import type { SecureContext } from 'node:tls';
import { pino } from 'pino';
import { createActor, waitFor, fromPromise } from 'xstate';
import { realClock } from '../clock.js';
import {
  CertificateUnavailableError,
  ConfigError,
  CorruptStorageError,
  EngineStoppedError,
  HandshakeTimeoutError,
  NameNotAllowedError,
  OperatorTimeoutError,
  TooManyWaitersError,
} from '../errors.js';
import {
  createCertificateMachine,
  lifecycleStateOf,
  refusalOf,
  TAGS,
  type AttemptInput,
  type CertificateContext,
  type CertificateMachine,
  type FailureRecord,
  type HandshakeAnswer,
  type HandshakeReply,
  type LoadedState,
  type OperatorOutcome,
  type OperatorReply,
} from '../machines/certificate.js';
import { defaultTimingPolicy, renewalTime, type TimingPolicy } from '../machines/policy.js';
import { InvalidNameError, RejectionLog, isIpLiteral, normalizeName } from '../names.js';
import { DEFAULT_DATA_DIR, fileStorage } from '../adapters/storage/file.js';
import { createHttpChallengeHandler, type HttpChallengeHandler, type HttpFallback } from '../adapters/challenges/http-01.js';
import { createTlsAlpnResponder, type ALPNCallback } from '../adapters/challenges/tls-alpn-01.js';
import { createAdminHandler, type AdminHandler, type AdminHandlerOptions } from '../admin/handler.js';
import { createOnDemandGate, OnDemandRefusedError, type OnDemandGate } from './on-demand.js';
import { keys, nameFromCertificateKey } from '../storage-keys.js';
import { isWatchable, type StorageChange } from '../adapters/storage/notify.js';
import { ariRenewalTime, ARI_DEFAULT_RECHECK_MS, clampAriRecheck } from './ari.js';
import type { CertificateBundle, CertificateMeta, Clock, Issuer, LifecycleState, Logger, NameStatus, Storage } from '../types.js';
import { isStorageOutage, runAttempt } from './attempt.js';
import { safeError, withSafeErrors } from '../safe-error.js';
import type { CertEngineEvent, CertEngineEventOf, CertEngineEventType } from './events.js';
import { Limiter } from './limiter.js';
import { certificateCoversName } from '../certs.js';
import { MaterialCache } from './material-cache.js';
import { WakeQueue } from './wake-queue.js';
import { newDomain, type CertActor, type Domain, type Dormant } from './domain.js';
import type { CertEngineOptions, EngineStats, ServedCertificate, HandshakeInfo, StartOptions } from './options.js';

export type { CertEngineOptions, EngineStats, ServedCertificate, HandshakeInfo, StartOptions } from './options.js';
import { parseFailure, parseUnit, serializeFailure } from './unit.js';

const DEFAULT_HANDSHAKE_TIMEOUT = 30_000;
const DEFAULT_OPERATOR_TIMEOUT = 5 * 60_000;
/** Storage reads in flight during the start-up scan of managed names. */
const SCAN_CONCURRENCY = 64;

/** Create an engine. Call `start()` before serving. */
export function createCertEngine(options: CertEngineOptions): CertEngine {
  return new CertEngine(options);
}

/** See `createCertEngine`. */
export class CertEngine {
  readonly #storage: Storage;
  readonly #issuers: readonly Issuer[];
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #policy: TimingPolicy;
  readonly #options: CertEngineOptions;
  readonly #handshakeTimeout: number;
  readonly #operatorTimeout: number;
  readonly #maxWaitersPerName: number;
  readonly #maxWaiters: number;
  readonly #domains = new Map<string, Domain>();
  readonly #materials: MaterialCache;
  /** One error or served certificate per answer, shared by every handshake it answers (a herd costs one, not 10,000). */
  readonly #sharedAnswers = new WeakMap<object, { nextAttemptAt?: number; result: ServedCertificate | Error }>();
  /** Due times of sleeping names (renewal, expiry): one heap, one timer. */
  readonly #wakes: WakeQueue;
  /** Live actors in `valid`, least recently active first: the candidates for sleep. */
  readonly #liveValid = new Map<string, Domain>();
  readonly #maxLiveActors: number;
  /** Certificates OpenSSL refused, already being replaced. */
  readonly #repairing = new Set<string>();
  #liveActors = 0;
  #sleepPending = false;
  readonly #events = new EventEmitter();
  readonly #machine: CertificateMachine;
  readonly #random: () => number;
  readonly #inflight = new Set<Promise<unknown>>();
  /** Loads from storage in flight at once: 100k names at start must not open 100k files (EMFILE). */
  readonly #loads = new Limiter(64);
  /** Attempts doing storage and CA work at once (a mass first start must not open a file or an order per name at once). */
  readonly #attempts = new Limiter(32);
  readonly #managedNames: Set<string>;
  readonly #gate: OnDemandGate | undefined;
  readonly #rejections: RejectionLog;
  #waiting = 0;
  #unwatch: (() => Promise<void>) | undefined;
  #started = false;
  #stopped = false;

  constructor(options: CertEngineOptions) {
    if (!options || typeof options !== 'object') throw new ConfigError('createCertEngine needs an options object');
    if (!Array.isArray(options.issuers) || options.issuers.length === 0) {
      throw new ConfigError('options.issuers needs at least one issuer (e.g. acmeIssuer({...}) or localCaIssuer())');
    }
    for (const issuer of options.issuers) {
      if (!issuer || typeof issuer.id !== 'string' || typeof issuer.issue !== 'function') {
        throw new ConfigError('every issuer needs a string `id` and an `issue()` function');
      }
    }
    this.#options = options;
    this.#storage = options.storage ?? fileStorage(DEFAULT_DATA_DIR);
    this.#issuers = [...options.issuers];
    this.#clock = options.clock ?? realClock();
    this.#logger = withSafeErrors(options.logger ?? pino({ level: 'silent' }));
    this.#policy = { ...defaultTimingPolicy, ...options.timing };
    this.#handshakeTimeout = positive(options.handshakeTimeout, DEFAULT_HANDSHAKE_TIMEOUT, 'handshakeTimeout');
    this.#operatorTimeout = positive(options.operatorTimeout, DEFAULT_OPERATOR_TIMEOUT, 'operatorTimeout');
    this.#maxWaitersPerName = positive(options.maxWaitersPerName, 10_000, 'maxWaitersPerName');
    this.#maxWaiters = positive(options.maxWaiters, 100_000, 'maxWaiters');
    positive(options.lockTtlMs, 60_000, 'lockTtlMs');
    this.#managedNames = new Set((options.names ?? []).map((n) => normalizeName(n, { allowWildcard: true, allowIp: true })));
    this.#gate = options.onDemand ? createOnDemandGate(options.onDemand, { now: () => this.#clock.now(), logger: this.#logger }) : undefined;
    this.#rejections = new RejectionLog({ logger: this.#logger, now: () => this.#clock.now() });
    this.#materials = new MaterialCache(count(options.cacheCapacity, 10_000, 'cacheCapacity'));
    this.#maxLiveActors = count(options.maxLiveActors, 1_000, 'maxLiveActors', 0);
    this.#wakes = new WakeQueue(this.#clock, (name) => this.#wakeDue(name));
    this.#random = options.random ?? Math.random;
    this.#machine = this.#provideMachine();
  }

  // ─── Lifecycle ────────────────────────────────────────────────────────────

  /**
   * Start managing the configured names. Handshakes are served from the
   * moment it is called (a name not read yet is read first). Resolves once
   * each name has been read from storage, or sooner with
   * `{ waitForStorage: false }`; issuance continues in the background.
   */
  async start(options: StartOptions = {}): Promise<void> {
    if (this.#stopped) throw new EngineStoppedError();
    if (this.#started) return;
    this.#started = true;
    // Records first: a handshake arriving while the watch connects must find its name.
    const domains = [...this.#managedNames].map((name) => this.#addDomain(name, true));
    await this.#watchStorage();
    const scanned = this.#scan(domains);
    if (options.waitForStorage === false) {
      scanned.catch((error: unknown) => this.#logger.error({ err: safeError(error) }, 'reading the managed names from storage failed'));
      return;
    }
    await scanned;
  }

  /**
   * Bring every managed name to life once. Below `maxLiveActors` a name gets
   * its actor (which reads storage through the bounded loads). Beyond it the
   * scan reads the name itself, 64 at a time: a good certificate not yet due
   * becomes a sleeping record; any other name gets its actor, handed what was
   * read. Names a handshake or an operator woke meanwhile are skipped.
   */
  async #scan(domains: Domain[]): Promise<void> {
    // Failure records are rare: list them once rather than look for one per name
    // (half the reads of a 100,000-name start). The listing only decides for names that
    // go to sleep (valid whatever a backoff says); a name that will attempt reads its
    // record itself, so one written by another process since the listing still holds.
    const failures = domains.length > this.#maxLiveActors ? await this.#listFailures() : undefined;
    let next = 0;
    const worker = async () => {
      while (next < domains.length && !this.#stopped) {
        const domain = domains[next++]!;
        if (domain.actor || domain.dormant) continue;
        // Below the limit every name gets its actor, which reads storage itself.
        if (this.#liveActors < this.#maxLiveActors) {
          this.#wake(domain);
          continue;
        }
        let loaded: LoadedState | undefined;
        let skipFailure = false;
        try {
          // The same slots as the actors' loads: a handshake's urgent read still goes first.
          skipFailure = failures !== undefined && !failures.has(keys.failure(domain.name));
          loaded = await this.#track(this.#loads.run(() => this.#read(domain.name, { background: true, skipFailure })));
        } catch {
          loaded = undefined; // the actor reads again, with the statechart's retry
        }
        if (this.#stopped || this.#domains.get(domain.name) !== domain || domain.actor || domain.dormant) continue;
        if (!loaded || !this.#sleepIfIdle(domain, loaded)) {
          // A name that will attempt reads its failure record itself, now, not from a listing
          // that may predate another process's failure (its backoff must hold here too).
          domain.preloaded = skipFailure ? undefined : loaded;
          this.#wake(domain);
        }
      }
    };
    await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, worker));
    // Resolve once no name is still loading (a preloaded load settles in a few microtasks).
    await Promise.all(domains.map((d) => d.actor && untilLoaded(d.actor)));
  }

  /**
   * Shared storages that announce writes (Redis pub/sub, PostgreSQL NOTIFY)
   * let a certificate renewed by another process be served here at once,
   * with no order of our own (the statechart's STORAGE_CHANGED).
   */
  async #watchStorage(): Promise<void> {
    if (!isWatchable(this.#storage)) return;
    try {
      this.#unwatch = await this.#storage.watch(keys.certificatesPrefix, (change) => this.#onStorageChange(change));
    } catch (error) {
      this.#logger.warn({ err: safeError(error) }, 'cannot watch storage for changes; renewals by other processes are picked up at our own renewal time');
    }
  }

  #onStorageChange(change: StorageChange): void {
    if (this.#stopped) return;
    // After the change feed was down (reconnected), anything may have changed: re-read every name we hold.
    if (change.type === 'resync') this.#logger.info({ names: this.#domains.size }, 'storage change feed reconnected: re-reading the stored certificates');
    const names = change.type === 'resync' ? [...this.#domains.keys()] : [nameFromCertificateKey(change.key)];
    for (const name of names) {
      const domain = name === undefined ? undefined : this.#domains.get(name);
      // Our own writes come back too: the fingerprint check in refreshFromStorage ignores them.
      // A name not read yet will read the change anyway.
      if (domain && (domain.actor || domain.dormant) && change.type !== 'delete') {
        this.refreshFromStorage(domain.name).catch((error: unknown) => this.#logger.warn({ name: domain.name, err: safeError(error) }, 'refresh from storage failed'));
      }
    }
  }

  /** Stop every actor, answer every waiting handshake, abort attempts in flight, and wait for them to finish. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#rejections.flush();
    this.#gate?.flushLog();
    await this.#unwatch?.().catch((error: unknown) => this.#logger.warn({ err: safeError(error) }, 'unwatch failed'));
    this.#wakes.clear();
    for (const domain of this.#domains.values()) {
      if (domain.ariTimer !== undefined) this.#clock.clearTimeout(domain.ariTimer);
      domain.actor?.send({ type: 'STOP' });
      domain.actor?.stop();
    }
    // Attempts see their AbortSignal; storage calls cannot be aborted, so wait for them only so long.
    let grace: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      Promise.allSettled([...this.#inflight]).then(() => true),
      new Promise<boolean>((resolve) => (grace = setTimeout(resolve, this.#options.stopTimeoutMs ?? 10_000, false))),
    ]);
    clearTimeout(grace);
    if (!settled) this.#logger.warn({ pending: this.#inflight.size }, 'stop: storage or issuer calls still pending after the grace period');
    this.#domains.clear();
    this.#events.removeAllListeners();
  }

  /** Add managed names at run time (normalised; already-known names are left as they are). */
  manage(names: string[]): void {
    this.#assertRunning();
    const added: Domain[] = [];
    for (const raw of names) {
      const name = normalizeName(raw, { allowWildcard: true, allowIp: true });
      if (this.#managedNames.has(name)) continue;
      this.#managedNames.add(name);
      if (!this.#domains.has(name)) added.push(this.#addDomain(name, true));
    }
    // Like start-up: actors up to the limit, then read in the background and sleep when valid.
    this.#scan(added).catch((error: unknown) => this.#logger.error({ err: safeError(error) }, 'reading managed names from storage failed'));
  }

  // ─── Serving ──────────────────────────────────────────────────────────────

  /**
   * The certificate for a name, as a handshake would get it: at once when one
   * is usable, else after the attempt in flight (bounded by `handshakeTimeout`).
   * Rejects with a typed error: `InvalidNameError`, `NameNotAllowedError`,
   * `CertificateUnavailableError` (the attempt's error), `HandshakeTimeoutError`, …
   */
  async getCertificate(servername: string, info: HandshakeInfo = {}): Promise<ServedCertificate> {
    this.#assertRunning();
    let name: string;
    try {
      name = normalizeName(servername);
    } catch (error) {
      // Counted and logged once per interval: a flood of hostile SNI must not become a flood of log lines.
      if (error instanceof InvalidNameError) this.#rejections.recordError(error);
      throw error;
    }
    const startedAt = this.#clock.now();
    try {
      const domain = this.#domains.get(name) ?? this.#managedWildcardFor(name) ?? (await this.#admitOnDemand(name, servername, info));
      let ready = this.#readyContext(domain);
      // A memoised answer whose key material was evicted (or never read): one shared read, then serve.
      if (!ready && this.#readyButNotInMemory(domain) && !this.#repairing.has(domain.ready!.fingerprint)) {
        await this.#reloadMaterial(domain);
        ready = this.#readyContext(domain);
      }
      const answer = ready ? { ok: true as const, fingerprint: domain.ready!.fingerprint, expired: domain.ready!.expired } : (domain.refusal ?? (await this.#handshake(domain)));
      // (A certificate OpenSSL refused is being replaced: reading it again would not help.)
      if (answer.ok && !this.#materials.has(answer.fingerprint) && !this.#repairing.has(answer.fingerprint)) await this.#reloadMaterial(domain);
      // A memoised `ready` answer is this call's own object: nothing to share it with.
      const served = this.#served(domain, answer, !ready);
      if (this.#events.listenerCount('handshake') > 0) {
        const waitedMs = this.#clock.now() - startedAt;
        this.#publish({ type: 'handshake', name, outcome: ready || waitedMs === 0 ? 'immediate' : 'waited', waitedMs });
      }
      return served;
    } catch (error) {
      if (this.#events.listenerCount('handshake') > 0) {
        this.#publish({ type: 'handshake', name, outcome: 'failed', waitedMs: this.#clock.now() - startedAt, errorType: (error as Error).name });
      }
      throw error;
    }
  }

  /** The memoised `valid`/`renewing` answer, if the certificate has not expired meanwhile and its material is in memory. */
  #readyContext(domain: Domain | undefined): SecureContext | undefined {
    const ready = domain?.ready;
    if (ready === undefined || this.#clock.now() >= ready.notAfter) return undefined;
    return this.#materials.secureContext(ready.fingerprint);
  }

  #readyButNotInMemory(domain: Domain): boolean {
    const ready = domain.ready;
    return ready !== undefined && this.#clock.now() < ready.notAfter && !this.#materials.has(ready.fingerprint);
  }

  /**
   * Read a name's stored certificate back into memory (after LRU eviction, or
   * for a name woken from sleep): one read per name however many handshakes
   * ask, ahead of background reads. If storage holds a different certificate
   * (another process renewed it), it is adopted as a storage change.
   */
  #reloadMaterial(domain: Domain): Promise<void> {
    domain.reloading ??= this.#track(this.#loads.run(() => this.#read(domain.name), true))
      .then(
        (loaded) => {
          if (loaded.certificate && loaded.certificate.fingerprint !== domain.fingerprint) this.#adopt(domain, loaded);
        },
        (error: unknown) => this.#logger.warn({ name: domain.name, err: safeError(error) }, 'cannot read the certificate from storage'),
      )
      .finally(() => {
        domain.reloading = undefined;
      });
    return domain.reloading;
  }

  /** Storage holds another certificate than the one served: adopt it if newer (STORAGE_CHANGED, or a sleeping name's record). */
  #adopt(domain: Domain, loaded: LoadedState): void {
    const incoming = loaded.certificate;
    if (!incoming) return;
    if (domain.actor) {
      domain.actor.send({ type: 'STORAGE_CHANGED', certificate: incoming });
      return;
    }
    const current = domain.dormant?.certificate;
    if (!current || incoming.notAfter <= current.notAfter || this.#clock.now() >= incoming.notAfter) return;
    // A sleeping name wakes with the newer certificate, as if read at start.
    domain.preloaded = { certificate: incoming, ...(loaded.failure ? { failure: loaded.failure } : {}) };
    this.#wake(domain);
  }

  /**
   * The managed wildcard covering `name`, if any: `*.example.com` covers
   * `a.example.com` (exactly one label, RFC 6125 §6.4.3), never `example.com`
   * or `a.b.example.com`. An exact managed or on-demand name wins over it.
   */
  #managedWildcardFor(name: string): Domain | undefined {
    const dot = name.indexOf('.');
    if (dot <= 0 || isIpLiteral(name)) return undefined;
    const wildcard = this.#domains.get(`*${name.slice(dot)}`);
    return wildcard?.managed ? wildcard : undefined;
  }

  /**
   * An unknown name at a handshake: only on-demand issuance may add it, and
   * only with permission. A refused name costs no actor and no storage write.
   */
  async #admitOnDemand(name: string, servername: string, info: HandshakeInfo): Promise<Domain> {
    if (!this.#gate) throw new NameNotAllowedError(name, 'not a managed name and on-demand issuance is off');
    try {
      await this.#gate.check(name, { servername, remoteAddress: info.remoteAddress });
    } catch (error) {
      // A decision outage must not stop serving a certificate that is already stored and valid.
      if (!(error instanceof OnDemandRefusedError && error.reason === 'decision-failed') || !(await this.#hasUsableStored(name))) throw error;
      this.#logger.warn({ name }, 'on-demand decision failed; serving the stored certificate');
    }
    this.#assertRunning();
    return this.#domains.get(name) ?? this.#addDomain(name, false);
  }

  async #hasUsableStored(name: string): Promise<boolean> {
    try {
      const raw = await this.#storage.load(keys.certificate(name));
      return raw !== undefined && parseUnit(keys.certificate(name), raw).meta.notAfter > this.#clock.now();
    } catch {
      return false;
    }
  }

  /**
   * Options for `tls`/`https`/`http2` servers: an `SNICallback` answered by the
   * engine, and an `ALPNCallback` that answers TLS-ALPN-01 challenges in the
   * same server and picks the application protocol for everyone else (Node
   * forbids `ALPNProtocols` beside `ALPNCallback`, so say them here).
   *
   * @param options.protocols application protocols in preference order
   *   (default `['http/1.1']`; `['h2', 'http/1.1']` for `http2.createSecureServer`)
   */
  tlsOptions(options: { protocols?: string[] } = {}): {
    SNICallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
    ALPNCallback: ALPNCallback;
  } {
    const alpn = createTlsAlpnResponder(this.#storage, { protocols: options.protocols, logger: this.#logger });
    const sni = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => {
      // Hot path: a normalised name (the common SNI) is its own Map key; no promise, no allocation.
      const ready = this.#stopped ? undefined : this.#readyContext(this.#domains.get(servername) ?? this.#managedWildcardFor(servername));
      if (ready) {
        if (this.#events.listenerCount('handshake') > 0) this.#publish({ type: 'handshake', name: servername, outcome: 'immediate', waitedMs: 0 });
        return cb(null, ready);
      }
      this.getCertificate(servername).then(
        (served) => cb(null, served.secureContext),
        (error: Error) => cb(error),
      );
    };
    return { SNICallback: alpn.wrapSNICallback(sni), ALPNCallback: alpn.ALPNCallback };
  }

  /**
   * An `http` request handler that answers ACME HTTP-01 challenges (from
   * storage, so any process of a cluster can answer) and passes every other
   * request to `next` (default: 404). Works as Express middleware too.
   */
  httpChallengeHandler(next?: HttpFallback): HttpChallengeHandler {
    return createHttpChallengeHandler(this.#storage, next);
  }

  // ─── Operating ────────────────────────────────────────────────────────────

  /** Status of every name the engine holds. */
  status(): NameStatus[] {
    const out: NameStatus[] = [];
    for (const domain of this.#domains.values()) out.push(this.#statusOf(domain));
    return out;
  }

  /** Status of one name (O(1)), or undefined when the engine does not hold it. */
  statusOf(servername: string): NameStatus | undefined {
    let name: string;
    try {
      name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    } catch {
      return undefined;
    }
    const domain = this.#domains.get(name);
    return domain && this.#statusOf(domain);
  }

  /** What the engine holds in memory right now. */
  get stats(): EngineStats {
    return {
      names: this.#domains.size,
      liveActors: this.#liveActors,
      sleeping: this.#wakes.size,
      cachedCertificates: this.#materials.size,
      waitingHandshakes: this.#waiting,
    };
  }

  /** Ids of the configured issuers, in the order they are tried. */
  get issuerIds(): string[] {
    return this.#issuers.map((i) => i.id);
  }

  /**
   * The admin handler (status page, SSE, `/metrics`, actions) for any `http`
   * server. Create it before `start()` to see the start-up transitions.
   * See `createAdminHandler` for options (token, basePath, …).
   */
  adminHandler(options: AdminHandlerOptions = {}): AdminHandler {
    return createAdminHandler(this, { issuerIds: this.issuerIds, ...options });
  }

  /**
   * Start one attempt now, backoff or not (an attempt already in flight is
   * joined, not duplicated). Resolves with the certificate, or rejects with
   * the attempt's error.
   */
  async forceRenew(servername: string, options: { timeoutMs?: number } = {}): Promise<CertificateMeta> {
    this.#assertRunning();
    const name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    const domain = this.#domains.get(name);
    if (!domain) throw new NameNotAllowedError(name, 'unknown name');
    const timeoutMs = positive(options.timeoutMs, this.#operatorTimeout, 'timeoutMs');
    const actor = this.#wake(domain, true);
    return new Promise<CertificateMeta>((resolve, reject) => {
      let settled = false;
      const reply: OperatorReply = (outcome) => {
        if (settled) return;
        settled = true;
        this.#clock.clearTimeout(timer);
        if (outcome.ok) resolve(outcome.certificate);
        else if ('stopped' in outcome) reject(new EngineStoppedError());
        else reject(new CertificateUnavailableError(name, outcome.error, outcome.nextAttemptAt));
      };
      const timer = this.#clock.setTimeout(() => {
        if (settled) return;
        settled = true;
        domain.operators?.delete(reply);
        reject(new OperatorTimeoutError(name, timeoutMs));
      }, timeoutMs);
      actor.send({ type: 'FORCE_RENEW', reply });
      // A stopped actor ignores events: answer rather than hang.
      if (actor.getSnapshot().status !== 'active') reply({ ok: false, stopped: true });
    });
  }

  /**
   * Re-read a name's stored certificate and adopt it if another process stored
   * a newer one (the statechart's `STORAGE_CHANGED`; no order is placed).
   * Resolves `true` when the stored certificate was newer and is now served.
   */
  async refreshFromStorage(servername: string): Promise<boolean> {
    this.#assertRunning();
    const name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    const domain = this.#domains.get(name);
    // A name not read yet reads storage when it is: nothing to refresh.
    if (!domain || (!domain.actor && !domain.dormant)) return false;
    // Bounded like every other read: a resync of 100,000 names must not issue 100,000 reads at once.
    const loaded = await this.#track(this.#loads.run(() => this.#read(name)));
    const { certificate } = loaded;
    if (!certificate || certificate.fingerprint === domain.fingerprint) return false;
    this.#adopt(domain, loaded);
    if (domain.actor) await untilLoaded(domain.actor);
    // A certificate not adopted stays in the material cache until the LRU drops it.
    return domain.fingerprint === certificate.fingerprint;
  }

  /** Subscribe to an engine event. Returns an unsubscribe function. */
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void {
    this.#events.on(type, listener);
    return () => this.#events.off(type, listener);
  }

  /** The engine's clock (useful for tests and status pages). */
  get clock(): Clock {
    return this.#clock;
  }

  /** The storage the engine was configured with. */
  get storage(): Storage {
    return this.#storage;
  }

  // ─── Internals ────────────────────────────────────────────────────────────

  #assertRunning(): void {
    if (this.#stopped) throw new EngineStoppedError();
    if (!this.#started) throw new ConfigError('call engine.start() first');
  }

  /** A name's record, without an actor yet (the scan, a handshake or an operator wakes it). */
  #addDomain(name: string, managed: boolean): Domain {
    const existing = this.#domains.get(name);
    if (existing) return existing;
    const domain = newDomain(name, managed);
    this.#domains.set(name, domain);
    return domain;
  }

  /**
   * The name's running actor, created if the name sleeps or was never read.
   * A sleeping name's actor starts from its record (no storage read) and
   * routes on: to `valid`, or to `renewing` when it woke because renewal is due.
   */
  #wake(domain: Domain, urgent = false): CertActor {
    if (domain.actor) return domain.actor;
    if (domain.dormant) {
      domain.preloaded ??= domain.dormant;
      domain.dormant = undefined;
      domain.waking = true;
      this.#wakes.cancel(domain.name);
    }
    domain.urgent = urgent;
    const actor = createActor(this.#machine, {
      id: `cert:${domain.name}`,
      input: { name: domain.name, serveExpired: this.#options.serveExpired ?? false },
      clock: this.#clock,
      inspect: this.#options.inspect,
    });
    domain.actor = actor;
    this.#liveActors++;
    actor.on('*', (event) => this.#publish(event as CertEngineEvent));
    domain.subscription = actor.subscribe({
      next: (snapshot) => this.#observe(domain, stateOf(snapshot.value), snapshot.context, answerOf(snapshot, this.#clock.now())),
      error: (error) => this.#logger.error({ name: domain.name, err: safeError(error) }, 'certificate actor failed'),
    });
    actor.start();
    return actor;
  }

  /**
   * Put a name to sleep instead of creating its actor, when the live actors
   * are at their limit and what was read is a good certificate not yet due.
   */
  #sleepIfIdle(domain: Domain, loaded: LoadedState): boolean {
    const certificate = loaded.certificate;
    if (!certificate || this.#liveActors < this.#maxLiveActors) return false;
    const now = this.#clock.now();
    if (now >= certificate.notAfter || (loaded.failure?.nextAttemptAt ?? 0) > now) return false;
    const renewAt = renewalTime(certificate, this.#random(), this.#policy);
    if (now >= renewAt) return false;
    this.#setDormant(domain, { ...loaded, certificate, renewAt });
    // Its first ARI question waits a random part of the usual recheck interval: 100,000 names read at
    // start must not become 100,000 requests to the CA within seconds (a new certificate still asks at once).
    const ariDelayMs = Math.max(1, Math.round(this.#random() * ARI_DEFAULT_RECHECK_MS));
    const context = { name: domain.name, certificate, renewAt, attempts: loaded.failure?.attempts ?? 0, attemptSeq: 0, serveExpired: false, forced: false };
    this.#show(domain, 'valid', context, { ok: true, fingerprint: certificate.fingerprint, expired: false }, ariDelayMs);
    return true;
  }

  #setDormant(domain: Domain, dormant: Dormant): void {
    domain.dormant = dormant;
    this.#wakes.schedule(domain.name, Math.min(dormant.renewAt, dormant.certificate.notAfter));
  }

  /** Sleep the least recently active `valid` actors beyond `maxLiveActors` (after the transition that asked, never inside it). */
  #sleepExcess(): void {
    if (this.#sleepPending || this.#liveActors <= this.#maxLiveActors) return;
    this.#sleepPending = true;
    setImmediate(() => {
      this.#sleepPending = false;
      for (const domain of this.#liveValid.values()) {
        if (this.#stopped || this.#liveActors <= this.#maxLiveActors) break;
        this.#sleep(domain);
      }
    });
  }

  /** Replace a `valid` actor with nothing in flight by its record. */
  #sleep(domain: Domain): void {
    const actor = domain.actor;
    if (!actor || (domain.waiters?.size ?? 0) > 0 || domain.reloading) return;
    const snapshot = actor.getSnapshot();
    const { certificate, renewAt, attempts, lastError } = snapshot.context;
    if (snapshot.status !== 'active' || !snapshot.matches('valid') || !certificate || renewAt === undefined) return;
    domain.subscription?.unsubscribe();
    domain.subscription = undefined;
    domain.actor = undefined;
    this.#liveActors--;
    this.#liveValid.delete(domain.name);
    actor.stop();
    this.#setDormant(domain, { certificate, renewAt, ...(attempts > 0 ? { failure: { attempts, lastError } } : {}) });
  }

  /** A sleeping name's renewal (or expiry) time has come: wake its actor, which routes to the attempt. */
  #wakeDue(name: string): void {
    const domain = this.#domains.get(name);
    if (domain?.dormant && !this.#stopped) this.#wake(domain);
  }

  /** Track transitions: log one line each, publish `state_changed`, drop key material no longer in use. */
  #observe(domain: Domain, state: LifecycleState, ctx: CertificateContext, answer: HandshakeAnswer | undefined): void {
    // A name woken from sleep reloads its known record: to the outside it stays `valid`.
    if (domain.waking && state === 'loading') return;
    domain.waking = false;
    if (state === 'valid') {
      this.#liveValid.delete(domain.name);
      this.#liveValid.set(domain.name, domain);
      this.#sleepExcess();
    } else {
      this.#liveValid.delete(domain.name);
    }
    this.#show(domain, state, ctx, answer);
  }

  /** Record a name's state and certificate (from its actor, or from a sleeping record), log and publish the change. */
  #show(domain: Domain, state: LifecycleState, ctx: CertificateContext, answer: HandshakeAnswer | undefined, ariDelayMs = 0): void {
    const { certificate } = ctx;
    const fingerprint = certificate?.fingerprint;
    domain.certificate = certificate;
    domain.ready = answer?.ok && certificate ? { fingerprint: certificate.fingerprint, notAfter: answer.expired ? Infinity : certificate.notAfter, expired: answer.expired } : undefined;
    domain.refusal = answer && !answer.ok ? answer : undefined;
    if (fingerprint !== domain.fingerprint) {
      if (domain.fingerprint !== undefined) this.#materials.delete(domain.fingerprint);
      domain.fingerprint = fingerprint;
      this.#scheduleAri(domain, ariDelayMs);
    }
    if (state === domain.state) return;
    const from = domain.state;
    domain.state = state;
    this.#logger.info(
      { name: domain.name, state, from, attempt: ctx.attemptSeq, ...(ctx.certificate ? { issuer: ctx.certificate.issuerId } : {}), ...(state === 'failed-backoff' && ctx.lastError ? { error: { type: ctx.lastError.type, message: ctx.lastError.message } } : {}) },
      'certificate state',
    );
    this.#publish({ type: 'state_changed', name: domain.name, from, to: state, at: this.#clock.now() });
  }

  #publish(event: CertEngineEvent): void {
    try {
      this.#events.emit(event.type, event);
    } catch (error) {
      // A listener's bug must not break the lifecycle of a certificate.
      this.#logger.error({ err: safeError(error), event: event.type }, 'event listener threw');
    }
  }

  /** Send a HANDSHAKE event (waking the name's actor) and wait for the one answer. */
  #handshake(domain: Domain): Promise<HandshakeAnswer> {
    return new Promise<HandshakeAnswer>((resolve) => {
      let answered = false;
      const reply: HandshakeReply = (answer) => {
        if (answered) return;
        answered = true;
        resolve(answer);
      };
      const actor = this.#wake(domain, true);
      actor.send({ type: 'HANDSHAKE', reply });
      // A stopped actor ignores events: answer rather than hang.
      if (actor.getSnapshot().status !== 'active') reply({ ok: false, stopped: true });
    });
  }

  /**
   * Turn an answer into what a handshake gets. One answer object is given to
   * every handshake a release (or a memoised state) answers, so the result is
   * built once per answer and shared: 10,000 waiters get one error object,
   * not 10,000 stack captures.
   */
  #served(domain: Domain, answer: HandshakeAnswer, share = true): ServedCertificate {
    if ('stopped' in answer) throw new EngineStoppedError();
    if (!share) {
      const result = this.#result(domain, answer);
      if (result instanceof Error) throw result;
      return result;
    }
    // An error answer is keyed by its recorded error (the same object for a whole backoff), an ok answer by itself.
    const key: object = answer.ok ? answer : answer.error;
    const shared = this.#sharedAnswers.get(key);
    if (shared !== undefined && (answer.ok || shared.nextAttemptAt === answer.nextAttemptAt)) {
      if (shared.result instanceof Error) throw shared.result;
      return shared.result;
    }
    const result = this.#result(domain, answer);
    this.#sharedAnswers.set(key, { ...(answer.ok ? {} : { nextAttemptAt: answer.nextAttemptAt }), result });
    if (result instanceof Error) throw result;
    return result;
  }

  #result(domain: Domain, answer: Exclude<HandshakeAnswer, { stopped: true }>): ServedCertificate | Error {
    const { name } = domain;
    if (answer.ok) {
      const bundle = this.#materials.bundle(answer.fingerprint);
      const secureContext = this.#materials.secureContext(answer.fingerprint);
      const meta = domain.certificate;
      if (!bundle || !secureContext || !meta) {
        // Not readable from storage, or refused by OpenSSL (e.g. a key that does not match): not servable.
        if (bundle && !secureContext) this.#repair(domain);
        return new CertificateUnavailableError(name, { type: 'CertificateUnavailableError', message: 'the stored certificate could not be read or used', at: this.#clock.now() });
      }
      return { meta, secureContext, certificatePem: bundle.certificatePem, privateKeyPem: bundle.privateKeyPem, expired: answer.expired };
    }
    switch (answer.error.type) {
      case 'HandshakeTimeoutError':
        return new HandshakeTimeoutError(name, this.#handshakeTimeout);
      case 'TooManyWaitersError':
        return new TooManyWaitersError(name, this.#maxWaitersPerName);
      default:
        return new CertificateUnavailableError(name, answer.error, answer.nextAttemptAt);
    }
  }

  /**
   * A stored certificate OpenSSL refuses (its key does not match: stored
   * metadata is read without parsing the key, which OpenSSL checks when the
   * context is built): replace it with a new one, once per certificate.
   */
  #repair(domain: Domain): void {
    const fingerprint = domain.fingerprint;
    if (fingerprint === undefined || this.#repairing.has(fingerprint) || this.#stopped) return;
    this.#repairing.add(fingerprint);
    this.#logger.warn({ name: domain.name }, 'the stored certificate cannot be served (its key does not match it?): obtaining a new one');
    this.#materials.delete(fingerprint);
    this.#wake(domain, true).send({ type: 'FORCE_RENEW' });
  }

  #statusOf(domain: Domain): NameStatus {
    const state = domain.state ?? 'loading';
    if (!domain.actor) {
      // Sleeping (valid), or not read yet (loading).
      const status: NameStatus = { name: domain.name, state, managed: domain.managed, attempts: domain.dormant?.failure?.attempts ?? 0 };
      if (domain.dormant) {
        status.certificate = domain.dormant.certificate;
        status.renewAt = domain.dormant.renewAt;
        if (domain.dormant.failure?.lastError) status.lastError = domain.dormant.failure.lastError;
      }
      return status;
    }
    const { context } = domain.actor.getSnapshot();
    const status: NameStatus = {
      name: domain.name,
      state,
      managed: domain.managed,
      attempts: context.attempts,
    };
    if (context.certificate) status.certificate = context.certificate;
    if (context.renewAt !== undefined) status.renewAt = context.renewAt;
    if (context.lastError) status.lastError = context.lastError;
    if (context.nextAttemptAt !== undefined) status.nextAttemptAt = context.nextAttemptAt;
    return status;
  }

  /** Bind the statechart's named effects to this engine. */
  #provideMachine(): CertificateMachine {
    const machine = createCertificateMachine({
      now: () => this.#clock.now(),
      random: this.#random,
      policy: this.#policy,
    });
    return machine.provide({
      actors: {
        loadStored: fromPromise<LoadedState, { name: string }>(({ input }) => this.#load(input.name)),
        attempt: fromPromise<Awaited<ReturnType<typeof runAttempt>>, AttemptInput>(({ input, signal }) =>
          this.#track(
            this.#attempts.run(() => runAttempt(
              {
                storage: this.#storage,
                issuers: this.#issuers,
                clock: this.#clock,
                logger: this.#logger,
                materials: this.#materials,
                policy: this.#policy,
                lockTtlMs: this.#options.lockTtlMs ?? 60_000,
                beforeIssue: (attempt) => this.#beforeOnDemandIssue(attempt),
                onIssuerResult: (r) =>
                  this.#publish({
                    type: 'issuer_attempt',
                    name: r.name,
                    issuer: r.issuer,
                    result: r.ok ? 'success' : 'failure',
                    durationMs: r.durationMs,
                    ...(r.ok ? {} : { errorType: r.error instanceof Error ? r.error.name : 'Error' }),
                  }),
              },
              input,
              signal,
            )),
          ),
        ),
        persistFailure: fromPromise<void, { name: string; record: FailureRecord }>(async ({ input }) => {
          // Our own refusals (permission, budget) are not the CA's verdict: keep them off disk, so a flood costs no writes.
          if (input.record.lastError?.code === 'ERR_NAME_NOT_ALLOWED') return;
          // Nor our storage being down: the write would fail, or outlive the outage as a cluster-wide backoff.
          if (isStorageOutage(input.record.lastError?.code)) return;
          return this.#track(
            this.#storage.store(keys.failure(input.name), serializeFailure(input.record)).catch((error: unknown) => {
              this.#logger.warn({ name: input.name, err: safeError(error) }, 'could not persist the failure record');
            }),
          );
        }),
      },
      actions: {
        holdHandshake: ({ context }, { reply }: { reply: HandshakeReply }) => this.#hold(context.name, reply),
        releaseHandshakes: ({ context }, answer: HandshakeAnswer) => this.#release(context.name, answer),
        holdOperator: ({ context }, { reply }: { reply?: OperatorReply }) => {
          const domain = this.#domains.get(context.name);
          if (reply && domain) (domain.operators ??= new Set()).add(reply);
        },
        releaseOperators: ({ context }, outcome: OperatorOutcome) => {
          const domain = this.#domains.get(context.name);
          const held = domain?.operators;
          if (!domain || !held) return;
          domain.operators = undefined;
          for (const reply of held) reply(outcome);
        },
      },
    });
  }

  /**
   * On-demand names need permission again before each renewal (a customer
   * may have left) and a token from the global budget before their first order.
   */
  async #beforeOnDemandIssue(attempt: AttemptInput): Promise<void> {
    const domain = this.#domains.get(attempt.name);
    if (!this.#gate || !domain || domain.managed) return;
    if (attempt.reason === 'obtain') {
      if (!this.#gate.takeIssuanceToken(attempt.name)) {
        throw new OnDemandRefusedError(attempt.name, 'rate-limited', { retryAfter: this.#gate.nextIssuanceTokenAt() });
      }
      return;
    }
    try {
      await this.#gate.check(attempt.name, { servername: attempt.name });
    } catch (error) {
      if (error instanceof OnDemandRefusedError && error.reason === 'denied') this.#evictSoon(domain);
      throw error;
    }
  }

  /** Drop an on-demand name the decision no longer allows: after its waiters were answered, stop its actor. */
  #evictSoon(domain: Domain): void {
    const off = this.on('state_changed', (e) => {
      if (e.name !== domain.name || e.to !== 'failed-backoff') return;
      off();
      setImmediate(() => {
        if (this.#domains.get(domain.name) !== domain) return;
        this.#domains.delete(domain.name);
        this.#liveValid.delete(domain.name);
        this.#wakes.cancel(domain.name);
        if (domain.ariTimer !== undefined) this.#clock.clearTimeout(domain.ariTimer);
        if (domain.actor) {
          this.#liveActors--;
          domain.actor.send({ type: 'STOP' });
          domain.actor.stop();
        }
        this.#logger.info({ name: domain.name }, 'on-demand name no longer allowed: evicted');
      });
    });
  }

  /**
   * ARI (RFC 9773): ask the certificate's issuer for its suggested renewal
   * window, renew at a uniform random time inside it (RENEWAL_INFO), and ask
   * again when the CA says (Retry-After, clamped to 1 min – 1 day).
   */
  #scheduleAri(domain: Domain, delayMs: number): void {
    if (domain.ariTimer !== undefined) this.#clock.clearTimeout(domain.ariTimer);
    domain.ariTimer = undefined;
    const meta = domain.certificate;
    const issuer = meta && this.#issuers.find((i) => i.id === meta.issuerId && typeof i.renewalInfo === 'function');
    if (!meta || !issuer || this.#stopped) return;
    const ask = () => {
      domain.ariTimer = undefined;
      const signal = AbortSignal.timeout(30_000);
      const context = { signal, logger: this.#logger.child({ name: domain.name, issuer: issuer.id }), storage: this.#storage, now: () => this.#clock.now() };
      this.#track(issuer.renewalInfo!(meta, context)).then(
        (info) => {
          if (this.#stopped || domain.fingerprint !== meta.fingerprint) return;
          const now = this.#clock.now();
          const renewAt = info ? ariRenewalTime(info, now, this.#random()) : undefined;
          if (renewAt !== undefined) this.#renewalInfo(domain, renewAt);
          this.#scheduleAri(domain, clampAriRecheck(info?.retryAfter, now));
        },
        (error: unknown) => {
          this.#logger.debug({ name: domain.name, err: safeError(error) }, 'renewal information unavailable');
          if (!this.#stopped && domain.fingerprint === meta.fingerprint) this.#scheduleAri(domain, ARI_DEFAULT_RECHECK_MS);
        },
      );
    };
    // A new certificate is asked about right away (off the transition's call stack); rechecks wait on the clock.
    if (delayMs <= 0) setImmediate(() => domain.fingerprint === meta.fingerprint && !this.#stopped && ask());
    else domain.ariTimer = this.#clock.setTimeout(ask, delayMs);
  }

  /** The CA suggests renewing at `renewAt`: tell the actor, or move a sleeping name's wake-up. */
  #renewalInfo(domain: Domain, renewAt: number): void {
    if (domain.actor) {
      domain.actor.send({ type: 'RENEWAL_INFO', renewAt });
    } else if (domain.dormant) {
      domain.dormant.renewAt = renewAt;
      if (renewAt <= this.#clock.now()) this.#wake(domain);
      else this.#wakes.schedule(domain.name, Math.min(renewAt, domain.dormant.certificate.notAfter));
    }
  }

  /** Keep a handshake until the attempt ends, or its own deadline. */
  #hold(name: string, reply: HandshakeReply): void {
    const domain = this.#domains.get(name);
    if (!domain) return reply({ ok: false, stopped: true });
    const waiters = (domain.waiters ??= new Map());
    if (waiters.size >= this.#maxWaitersPerName || this.#waiting >= this.#maxWaiters) {
      return reply({ ok: false, error: { type: 'TooManyWaitersError', message: 'too many waiting handshakes', at: this.#clock.now() } });
    }
    waiters.set(reply, this.#clock.now() + this.#handshakeTimeout);
    this.#waiting++;
    if (domain.deadlineTimer === undefined) this.#armDeadline(domain);
  }

  /** One timer per name, for its oldest waiter's deadline (not one per waiter: a herd of 10,000 costs one). */
  #armDeadline(domain: Domain): void {
    const oldest = domain.waiters?.values().next();
    if (!oldest || oldest.done) return;
    domain.deadlineTimer = this.#clock.setTimeout(() => this.#expireWaiters(domain), Math.max(0, oldest.value - this.#clock.now()));
  }

  /** Answer the waiters whose deadline has passed with a timeout (one shared answer); the attempt goes on for the rest. */
  #expireWaiters(domain: Domain): void {
    domain.deadlineTimer = undefined;
    const now = this.#clock.now();
    const timeout: HandshakeAnswer = { ok: false, error: { type: 'HandshakeTimeoutError', message: 'handshake timeout', at: now } };
    const expired: HandshakeReply[] = [];
    const waiters = domain.waiters ?? new Map<HandshakeReply, number>();
    for (const [reply, deadline] of waiters) {
      if (deadline > now) break;
      expired.push(reply);
    }
    for (const reply of expired) waiters.delete(reply);
    this.#waiting -= expired.length;
    this.#armDeadline(domain);
    for (const reply of expired) reply(timeout);
  }

  /** Answer every held handshake of a name with the state's answer. Never sends an event: nothing can recurse. */
  #release(name: string, answer: HandshakeAnswer): void {
    const domain = this.#domains.get(name);
    if (!domain?.waiters || domain.waiters.size === 0) return;
    const held = [...domain.waiters.keys()];
    domain.waiters = undefined;
    if (domain.deadlineTimer !== undefined) this.#clock.clearTimeout(domain.deadlineTimer);
    domain.deadlineTimer = undefined;
    this.#waiting -= held.length;
    for (const reply of held) reply(answer);
  }

  /** Keys of every stored failure record, or undefined when storage cannot list them (then each name looks for its own). */
  async #listFailures(): Promise<Set<string> | undefined> {
    try {
      return new Set(await this.#track(this.#storage.list(keys.failuresPrefix)));
    } catch (error) {
      this.#logger.warn({ err: safeError(error) }, 'cannot list failure records; reading them name by name');
      return undefined;
    }
  }

  /** The actor's load: what a storage read already found (scan, wake from sleep), else a read, bounded (urgent ones first). */
  #load(name: string): Promise<LoadedState> {
    const domain = this.#domains.get(name);
    const preloaded = domain?.preloaded;
    if (domain && preloaded) {
      domain.preloaded = undefined;
      return Promise.resolve(preloaded);
    }
    return this.#track(this.#loads.run(() => this.#read(name), domain?.urgent ?? false));
  }

  /**
   * Read a name's certificate unit and failure record (`background`: for the
   * start-up scan; `skipFailure`: the scan's listing showed there is none). Corrupt values count as absent (logged). The key is not parsed here (10× cheaper: 100,000
   * names are read at start); OpenSSL checks it when the context is built,
   * and a refused pair is replaced (`#repair`).
   */
  async #read(name: string, { background = false, skipFailure = false } = {}): Promise<LoadedState> {
    const [unitRaw, failureRaw] = await Promise.all([
      this.#storage.load(keys.certificate(name)),
      skipFailure ? undefined : this.#storage.load(keys.failure(name)),
    ]);
    const loaded: LoadedState = {};
    if (unitRaw !== undefined) {
      const unit = this.#parseOrWarn(name, () => parseUnit(keys.certificate(name), unitRaw, { checkKey: false }));
      // A unit stored under the wrong name is not this name's certificate.
      if (unit && !certificateCoversName(unit.meta, name)) {
        this.#logger.warn({ name }, 'ignoring a stored certificate that does not cover its name');
      } else if (unit) {
        // A background read keeps the PEMs only while the cache has room: it must not evict what handshakes use.
        if (background) this.#materials.putIfRoom(unit.meta.fingerprint, unit.bundle);
        else this.#materials.put(unit.meta.fingerprint, unit.bundle);
        loaded.certificate = unit.meta;
      }
    }
    if (failureRaw !== undefined) {
      const failure = this.#parseOrWarn(name, () => parseFailure(keys.failure(name), failureRaw));
      if (failure) loaded.failure = failure;
    }
    return loaded;
  }

  #parseOrWarn<T>(name: string, parse: () => T): T | undefined {
    try {
      return parse();
    } catch (error) {
      if (!(error instanceof CorruptStorageError)) throw error;
      this.#logger.warn({ name, err: safeError(error) }, 'ignoring corrupt stored value');
      return undefined;
    }
  }

  /** Remember an effect in flight so `stop()` can wait for it. */
  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inflight.add(promise);
    const forget = () => this.#inflight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  /** @internal For tests: the bundle behind a fingerprint. */
  _bundle(fingerprint: string): CertificateBundle | undefined {
    return this.#materials.bundle(fingerprint);
  }
}

/**
 * Resolves once `actor` has left `loading`, or stopped (never rejects);
 * undefined when it is not loading, so callers can go on synchronously.
 */
function untilLoaded(actor: CertActor): Promise<void> | undefined {
  if (!actor.getSnapshot().matches('loading')) return undefined;
  return waitFor(actor, (s) => s.status !== 'active' || !s.matches('loading'), { timeout: Infinity }).then(
    () => undefined,
    () => undefined,
  );
}

/** Map a snapshot value to the lifecycle state name shown to users (see `lifecycleStateOf`). */
export const stateOf = lifecycleStateOf;

/** The answer the chart gives a handshake at once in this snapshot, by its tags; undefined when it holds. */
function answerOf(snapshot: ReturnType<CertActor['getSnapshot']>, now: number): HandshakeAnswer | undefined {
  const { certificate } = snapshot.context;
  if (certificate && snapshot.hasTag(TAGS.servesCertificate)) return { ok: true, fingerprint: certificate.fingerprint, expired: now >= certificate.notAfter };
  if (certificate && snapshot.hasTag(TAGS.servesExpiredCertificate)) return { ok: true, fingerprint: certificate.fingerprint, expired: true };
  if (snapshot.hasTag(TAGS.refuses)) return refusalOf(snapshot.context);
  return undefined;
}

function count(value: number | undefined, fallback: number, what: string, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) throw new ConfigError(`${what} must be a whole number ≥ ${min}`);
  return value;
}

function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new ConfigError(`${what} must be a positive number of ms`);
  return value;
}

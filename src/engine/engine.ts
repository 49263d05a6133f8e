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
import { createActor, waitFor, type Actor, type InspectionEvent, type Observer, fromPromise } from 'xstate';
import { realClock } from '../clock.js';
import {
  CertificateUnavailableError,
  ConfigError,
  CorruptStorageError,
  EngineStoppedError,
  HandshakeTimeoutError,
  NameNotAllowedError,
  TooManyWaitersError,
} from '../errors.js';
import {
  createCertificateMachine,
  type AttemptInput,
  type CertificateContext,
  type CertificateMachine,
  type FailureRecord,
  type HandshakeAnswer,
  type HandshakeReply,
  type LoadedState,
} from '../machines/certificate.js';
import { defaultTimingPolicy, type TimingPolicy } from '../machines/policy.js';
import { InvalidNameError, RejectionLog, isIpLiteral, normalizeName } from '../names.js';
import { DEFAULT_DATA_DIR, fileStorage } from '../adapters/storage/file.js';
import { createHttpChallengeHandler, type HttpChallengeHandler, type HttpFallback } from '../adapters/challenges/http-01.js';
import { createTlsAlpnResponder, type ALPNCallback } from '../adapters/challenges/tls-alpn-01.js';
import { createAdminHandler, type AdminHandler, type AdminHandlerOptions } from '../admin/handler.js';
import { createOnDemandGate, OnDemandRefusedError, type OnDemandGate, type OnDemandOptions } from './on-demand.js';
import { keys, nameFromCertificateKey } from '../storage-keys.js';
import { isWatchable, type StorageChange } from '../adapters/storage/notify.js';
import { ariRenewalTime, ARI_DEFAULT_RECHECK_MS, clampAriRecheck } from './ari.js';
import type { CertificateBundle, CertificateMeta, Clock, Issuer, LifecycleState, Logger, NameStatus, Storage, TimerHandle } from '../types.js';
import { isStorageOutage, runAttempt, safeError } from './attempt.js';
import type { CertEngineEvent, CertEngineEventOf, CertEngineEventType } from './events.js';
import { Limiter } from './limiter.js';
import { certificateCoversName } from '../certs.js';
import { MaterialCache } from './material-cache.js';
import { parseFailure, parseUnit, serializeFailure } from './unit.js';

/** Options of `createCertEngine`. */
export interface CertEngineOptions {
  /**
   * Where certificates, keys, failure records and locks live; processes
   * sharing a storage form one cluster. Default: `fileStorage('./certstate-data')`.
   */
  storage?: Storage;
  /** Issuers tried in order within one attempt (e.g. Let's Encrypt, then ZeroSSL). At least one. */
  issuers: Issuer[];
  /** Managed names: obtained at start and kept renewed. `*.example.com` wildcards allowed. */
  names?: string[];
  /**
   * On-demand issuance: a handshake for an unmanaged name asks `decide` and/or
   * the `ask` endpoint; if allowed (and within the issuance budget), a
   * certificate is obtained during the handshake. See `OnDemandOptions`.
   */
  onDemand?: OnDemandOptions;
  /** Longest time a handshake waits for an attempt in flight, ms (default 30,000). The attempt goes on. */
  handshakeTimeout?: number;
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
}

/** A certificate ready to serve. */
export interface ServedCertificate {
  meta: CertificateMeta;
  /** Built once per certificate and shared by every handshake. */
  secureContext: SecureContext;
  certificatePem: string;
  privateKeyPem: string;
  /** True when an expired certificate is served (only with `serveExpired`). */
  expired: boolean;
}

/** Details of a handshake, for on-demand decisions and logs. */
export interface HandshakeInfo {
  remoteAddress?: string;
}

type CertActor = Actor<CertificateMachine>;

interface Domain {
  readonly name: string;
  readonly managed: boolean;
  readonly actor: CertActor;
  /** Held handshakes and their deadline timers. */
  readonly waiters: Map<HandshakeReply, TimerHandle | undefined>;
  state: LifecycleState | undefined;
  fingerprint: string | undefined;
  /** Next ARI (renewal information) check, if the certificate's issuer offers ARI. */
  ariTimer?: TimerHandle;
  /**
   * The answer of `valid` and `renewing` ("this certificate, at once"),
   * memoised from the latest snapshot so a handshake costs a Map lookup, not
   * an XState macrostep. Unset in every other state: those handshakes are events.
   */
  ready: { fingerprint: string; notAfter: number } | undefined;
}

const DEFAULT_HANDSHAKE_TIMEOUT = 30_000;

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
  readonly #maxWaitersPerName: number;
  readonly #maxWaiters: number;
  readonly #domains = new Map<string, Domain>();
  readonly #materials = new MaterialCache();
  readonly #events = new EventEmitter();
  readonly #machine: CertificateMachine;
  readonly #inflight = new Set<Promise<unknown>>();
  /** Loads from storage in flight at once: 100k names at start must not open 100k files (EMFILE). */
  readonly #loads = new Limiter(64);
  /** Attempts doing storage and CA work at once (a mass first start must not open a file or an order per name at once). */
  readonly #attempts = new Limiter(32);
  readonly #managedNames: string[];
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
    this.#logger = options.logger ?? pino({ level: 'silent' });
    this.#policy = { ...defaultTimingPolicy, ...options.timing };
    this.#handshakeTimeout = positive(options.handshakeTimeout, DEFAULT_HANDSHAKE_TIMEOUT, 'handshakeTimeout');
    this.#maxWaitersPerName = positive(options.maxWaitersPerName, 10_000, 'maxWaitersPerName');
    this.#maxWaiters = positive(options.maxWaiters, 100_000, 'maxWaiters');
    positive(options.lockTtlMs, 60_000, 'lockTtlMs');
    this.#managedNames = (options.names ?? []).map((n) => normalizeName(n, { allowWildcard: true, allowIp: true }));
    this.#gate = options.onDemand ? createOnDemandGate(options.onDemand, { now: () => this.#clock.now(), logger: this.#logger }) : undefined;
    this.#rejections = new RejectionLog({ logger: this.#logger, now: () => this.#clock.now() });
    this.#machine = this.#provideMachine();
  }

  // ─── Lifecycle ────────────────────────────────────────────────────────────

  /** Start managing the configured names. Resolves once each has been read from storage (issuance continues in the background). */
  async start(): Promise<void> {
    if (this.#stopped) throw new EngineStoppedError();
    if (this.#started) return;
    this.#started = true;
    // Actors first: a handshake arriving while the watch connects must find its name.
    const domains = this.#managedNames.map((name) => this.#ensureDomain(name, true));
    await this.#watchStorage();
    await Promise.all(domains.map((d) => waitFor(d.actor, (s) => !s.matches('loading'))));
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
    const names = change.type === 'resync' ? [...this.#domains.keys()] : [nameFromCertificateKey(change.key)];
    for (const name of names) {
      const domain = name === undefined ? undefined : this.#domains.get(name);
      // Our own writes come back too: the fingerprint check in refreshFromStorage ignores them.
      if (domain && change.type !== 'delete') {
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
    for (const domain of this.#domains.values()) {
      if (domain.ariTimer !== undefined) this.#clock.clearTimeout(domain.ariTimer);
      domain.actor.send({ type: 'STOP' });
      domain.actor.stop();
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
    for (const raw of names) {
      const name = normalizeName(raw, { allowWildcard: true, allowIp: true });
      if (!this.#managedNames.includes(name)) this.#managedNames.push(name);
      this.#ensureDomain(name, true);
    }
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
      const ready = this.#readyContext(domain);
      const answer = ready ? { ok: true as const, fingerprint: domain.ready!.fingerprint, expired: false } : await this.#handshake(domain);
      const served = this.#served(domain.name, answer);
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

  /** The memoised `valid`/`renewing` answer, if the certificate has not expired meanwhile. */
  #readyContext(domain: Domain | undefined): SecureContext | undefined {
    const ready = domain?.ready;
    if (ready === undefined || this.#clock.now() >= ready.notAfter) return undefined;
    return this.#materials.secureContext(ready.fingerprint);
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
    return this.#domains.get(name) ?? this.#ensureDomain(name, false);
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
  async forceRenew(servername: string): Promise<CertificateMeta> {
    this.#assertRunning();
    const name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    const domain = this.#domains.get(name);
    if (!domain) throw new NameNotAllowedError(name, 'unknown name');
    const { actor } = domain;
    if (actor.getSnapshot().matches('loading')) await waitFor(actor, (s) => !s.matches('loading'));
    const before = actor.getSnapshot();
    if (!before.matches('attempting')) actor.send({ type: 'FORCE_RENEW' });
    const seq = before.matches('attempting') ? before.context.attemptSeq : before.context.attemptSeq + 1;
    const after = await waitFor(actor, (s) => s.status !== 'active' || (s.context.attemptSeq >= seq && !s.matches('attempting')), {
      timeout: Infinity,
    });
    if (after.matches('valid') && after.context.certificate) return after.context.certificate;
    if (after.status !== 'active' || after.matches('stopped')) throw new EngineStoppedError();
    throw new CertificateUnavailableError(name, after.context.lastError ?? { type: 'Error', message: 'attempt failed', at: this.#clock.now() }, after.context.nextAttemptAt);
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
    if (!domain) return false;
    const { certificate } = await this.#load(name);
    if (!certificate || certificate.fingerprint === domain.fingerprint) return false;
    domain.actor.send({ type: 'STORAGE_CHANGED', certificate });
    const adopted = domain.fingerprint === certificate.fingerprint;
    // Drop the material only if nothing can be about to use it: an attempt in
    // flight (STORAGE_CHANGED is ignored while attempting) may have just
    // adopted or stored this very certificate, and another name may share it.
    if (!adopted && !domain.actor.getSnapshot().matches('attempting') && ![...this.#domains.values()].some((d) => d.fingerprint === certificate.fingerprint)) {
      this.#materials.delete(certificate.fingerprint);
    }
    return adopted;
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

  #ensureDomain(name: string, managed: boolean): Domain {
    const existing = this.#domains.get(name);
    if (existing) return existing;
    const actor = createActor(this.#machine, {
      id: `cert:${name}`,
      input: { name, serveExpired: this.#options.serveExpired ?? false },
      clock: this.#clock,
      inspect: this.#options.inspect,
    });
    const domain: Domain = { name, managed, actor, waiters: new Map(), state: undefined, fingerprint: undefined, ready: undefined };
    this.#domains.set(name, domain);
    actor.on('*', (event) => this.#publish(event as CertEngineEvent));
    actor.subscribe({
      next: (snapshot) => this.#observe(domain, stateOf(snapshot.value), snapshot.context),
      error: (error) => this.#logger.error({ name, err: safeError(error) }, 'certificate actor failed'),
    });
    actor.start();
    return domain;
  }

  /** Track transitions: log one line each, publish `state_changed`, drop key material no longer in use. */
  #observe(domain: Domain, state: LifecycleState, ctx: CertificateContext): void {
    const { certificate } = ctx;
    const fingerprint = certificate?.fingerprint;
    domain.ready = (state === 'valid' || state === 'renewing') && certificate ? { fingerprint: certificate.fingerprint, notAfter: certificate.notAfter } : undefined;
    if (fingerprint !== domain.fingerprint) {
      if (domain.fingerprint !== undefined) this.#materials.delete(domain.fingerprint);
      domain.fingerprint = fingerprint;
      this.#scheduleAri(domain, 0);
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

  /** Send a HANDSHAKE event and wait for the one answer. */
  #handshake(domain: Domain): Promise<HandshakeAnswer> {
    return new Promise<HandshakeAnswer>((resolve) => {
      let answered = false;
      const reply: HandshakeReply = (answer) => {
        if (answered) return;
        answered = true;
        resolve(answer);
      };
      domain.actor.send({ type: 'HANDSHAKE', reply });
      // A stopped actor ignores events: answer rather than hang.
      if (domain.actor.getSnapshot().status !== 'active') reply({ ok: false, stopped: true });
    });
  }

  #served(name: string, answer: HandshakeAnswer): ServedCertificate {
    if (answer.ok) {
      const bundle = this.#materials.bundle(answer.fingerprint);
      const secureContext = this.#materials.secureContext(answer.fingerprint);
      const meta = this.#domains.get(name)?.actor.getSnapshot().context.certificate;
      if (!bundle || !secureContext || !meta) throw new EngineStoppedError();
      return { meta, secureContext, certificatePem: bundle.certificatePem, privateKeyPem: bundle.privateKeyPem, expired: answer.expired };
    }
    if ('stopped' in answer) throw new EngineStoppedError();
    switch (answer.error.type) {
      case 'HandshakeTimeoutError':
        throw new HandshakeTimeoutError(name, this.#handshakeTimeout);
      case 'TooManyWaitersError':
        throw new TooManyWaitersError(name, this.#maxWaitersPerName);
      default:
        throw new CertificateUnavailableError(name, answer.error, answer.nextAttemptAt);
    }
  }

  #statusOf(domain: Domain): NameStatus {
    const { context } = domain.actor.getSnapshot();
    const status: NameStatus = {
      name: domain.name,
      state: domain.state ?? 'loading',
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
      random: this.#options.random ?? Math.random,
      policy: this.#policy,
    });
    return machine.provide({
      actors: {
        loadStored: fromPromise<LoadedState, { name: string }>(({ input }) => this.#track(this.#loads.run(() => this.#load(input.name)))),
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
        holdHandshake: ({ context, event }) => {
          if (event.type !== 'HANDSHAKE') return;
          this.#hold(context.name, event.reply);
        },
        releaseHandshakes: ({ context }, answer: HandshakeAnswer) => this.#release(context.name, answer),
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
        domain.actor.send({ type: 'STOP' });
        domain.actor.stop();
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
    const meta = domain.actor.getSnapshot().context.certificate;
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
          const renewAt = info ? ariRenewalTime(info, now, (this.#options.random ?? Math.random)()) : undefined;
          if (renewAt !== undefined) domain.actor.send({ type: 'RENEWAL_INFO', renewAt });
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

  /** Keep a handshake until the attempt ends, or its own deadline. */
  #hold(name: string, reply: HandshakeReply): void {
    const domain = this.#domains.get(name);
    if (!domain) return reply({ ok: false, stopped: true });
    if (domain.waiters.size >= this.#maxWaitersPerName || this.#waiting >= this.#maxWaiters) {
      return reply({ ok: false, error: { type: 'TooManyWaitersError', message: 'too many waiting handshakes', at: this.#clock.now() } });
    }
    const timer = this.#clock.setTimeout(() => {
      if (!domain.waiters.delete(reply)) return;
      this.#waiting--;
      reply({ ok: false, error: { type: 'HandshakeTimeoutError', message: 'handshake timeout', at: this.#clock.now() } });
    }, this.#handshakeTimeout);
    domain.waiters.set(reply, timer);
    this.#waiting++;
  }

  /** Answer every held handshake of a name with the state's answer. Never sends an event: nothing can recurse. */
  #release(name: string, answer: HandshakeAnswer): void {
    const domain = this.#domains.get(name);
    if (!domain || domain.waiters.size === 0) return;
    const held = [...domain.waiters];
    domain.waiters.clear();
    this.#waiting -= held.length;
    for (const [reply, timer] of held) {
      if (timer !== undefined) this.#clock.clearTimeout(timer);
      reply(answer);
    }
  }

  /** Read a name's certificate unit and failure record. Corrupt values count as absent (logged). */
  async #load(name: string): Promise<LoadedState> {
    const [unitRaw, failureRaw] = await Promise.all([this.#storage.load(keys.certificate(name)), this.#storage.load(keys.failure(name))]);
    const loaded: LoadedState = {};
    if (unitRaw !== undefined) {
      const unit = this.#parseOrWarn(name, () => parseUnit(keys.certificate(name), unitRaw));
      // A unit stored under the wrong name is not this name's certificate.
      if (unit && !certificateCoversName(unit.meta, name)) {
        this.#logger.warn({ name }, 'ignoring a stored certificate that does not cover its name');
      } else if (unit) {
        this.#materials.put(unit.meta.fingerprint, unit.bundle);
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

/** Map a snapshot value to the lifecycle state name shown to users. */
export function stateOf(value: unknown): LifecycleState {
  if (typeof value === 'string') return value as LifecycleState;
  const attempting = (value as { attempting?: string }).attempting;
  return (attempting ?? 'loading') as LifecycleState;
}

function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new ConfigError(`${what} must be a positive number of ms`);
  return value;
}

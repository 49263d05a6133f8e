/**
 * The certificate engine: a facade over named parts, each with one job.
 *
 * - `EngineCore` (core.ts): settings, clock, logger, storage, issuers, the
 *   event bus, and the engine's lifetime (one abort signal; effects in flight).
 * - The chart (machines/certificate.ts) decides; `provideEffects` (effects.ts)
 *   binds the effects it names to storage, issuers and held replies.
 * - `HandshakePath` (handshake-path.ts): what a handshake gets, in a numbered order.
 * - `HeldReplies` (held-replies.ts): handshakes and operators waiting for an outcome.
 * - `Residency` (residency.ts): live, sleeping and not-yet-read names; the wake heap.
 * - `StateView` (state-view.ts): what the outside sees of a name, read from snapshots.
 * - `Loads` (loads.ts), `StorageSync` (storage-sync.ts): reads, the start-up scan, the storage watch.
 * - `AriSchedule` (ari-schedule.ts), `OnDemandAdmission` (admission.ts),
 *   `requestAttempt` (operator.ts): an operator's FORCE_RENEW and its one outcome.
 * - `SessionTickets` (session-tickets.ts): the cluster's session-ticket keys;
 *   `StorageCleaner` (storage-cleaner.ts): storage that stays bounded.
 *
 * `start()` and `stop()` are memoised: a second call waits for the first;
 * `start()` after `stop()` is an `EngineStoppedError`; `stop()` during
 * `start()` closes whatever start opened.
 */
import type { Server as TlsServer } from 'node:tls';
import { createHttpChallengeHandler, type HttpChallengeHandler, type HttpFallback } from '../adapters/challenges/http-01.js';
import { createTlsAlpnResponder } from '../adapters/challenges/tls-alpn-01.js';
import { createAdminHandler, type AdminHandler, type AdminHandlerOptions } from '../admin/handler.js';
import { ConfigError, EngineStoppedError, NameNotAllowedError } from '../errors.js';
import { lifecycleStateOf } from '../machines/certificate.js';
import { chartDecisions } from '../machines/decisions.js';
import { chartQuestions } from '../machines/questions.js';
import { normalizeName } from '../names.js';
import { safeError } from '../safe-error.js';
import type { CertificateBundle, CertificateMeta, Clock, NameStatus, Storage } from '../types.js';
import { OnDemandAdmission } from './admission.js';
import { AriSchedule } from './ari-schedule.js';
import { prepareAdapters } from './config.js';
import { EngineCore, positive } from './core.js';
import { provideEffects } from './effects.js';
import type { CertEngineEventOf, CertEngineEventType } from './events.js';
import { answerHandshakes, mayUseTlsAlpn01, type TlsCallbacks, type TlsOptionsConfig } from './handshake-answers.js';
import { HandshakePath } from './handshake-path.js';
import { HeldReplies } from './held-replies.js';
import { Loads } from './loads.js';
import { belongsElsewhere } from './name-record.js';
import { StartRecords } from './start-records.js';
import { managedCertificates, type ManagedEntry } from './managed-names.js';
import { MaterialCache } from './material-cache.js';
import { requestAttempt, type ForceRenewOptions } from './operator.js';
export type { ForceRenewOptions } from './operator.js';
import { DEFAULT_PAUSE_AFTER_MS } from './on-demand.js';
import type { CertEngineOptions, EngineStats, HandshakeInfo, ServedCertificate, StartOptions } from './options.js';
import { Residency } from './residency.js';
import { SessionTickets, type SessionTicketServerOptions } from './session-tickets.js';
import { StateView } from './state-view.js';
import { StorageCleaner } from './storage-cleaner.js';
import { StartupIndex } from './startup-index.js';
import { StorageSync } from './storage-sync.js';
import { statusPage, summarize, walkStatuses, type StatusFilter, type StatusPage, type StatusQuery, type StatusSummary, type StatusSummaryOptions } from './status-query.js';
import { WakeQueue } from './wake-queue.js';

export type { CertEngineOptions, EngineStats, ServedCertificate, HandshakeInfo, StartOptions } from './options.js';
export type { StatusFilter, StatusPage, StatusQuery, StatusSummary, StatusSummaryOptions } from './status-query.js';

/** Create an engine. Call `start()` before serving. */
export function createCertEngine(options: CertEngineOptions): CertEngine {
  return new CertEngine(options);
}

/** See `createCertEngine`. */
export class CertEngine {
  readonly #core: EngineCore;
  readonly #materials: MaterialCache;
  readonly #held: HeldReplies;
  readonly #residency: Residency;
  readonly #view: StateView;
  readonly #ari: AriSchedule;
  readonly #admission: OnDemandAdmission;
  readonly #sync: StorageSync;
  readonly #path: HandshakePath;
  readonly #tickets: SessionTickets | undefined;
  readonly #cleaner: StorageCleaner | undefined;
  /** Managed certificates by key → all their names when several; after `start()` made the records, only
   * names without a managed record of their own (on demand when `manage()` took them): no second big `Map`. */
  #managed: Map<string, readonly string[] | undefined>;
  readonly #defaultName: string | undefined;
  /** Whether any issuer may use TLS-ALPN-01 (their `challenges`, read once here: the set of issuers is fixed). */
  readonly #issuersMayUseTlsAlpn01: boolean;
  /** `start()`'s records for the configured names, made a slice at a time. */
  readonly #records: StartRecords;
  /** Set by the first `start()`: resolves once handshakes can be served, with the scan of the managed names. */
  #opening: Promise<{ scanned: Promise<void> }> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: CertEngineOptions) {
    const core = (this.#core = new EngineCore(options));
    this.#managed = new Map(managedCertificates(options.names ?? []).map((names) => [names[0]!, names.length > 1 ? names : undefined]));
    const { settings } = core;
    const materials = (this.#materials = new MaterialCache(settings.cacheCapacity));
    const held = (this.#held = new HeldReplies(core.clock, {
      handshakeTimeout: settings.handshakeTimeout,
      maxPerName: settings.maxWaitersPerName,
      maxTotal: settings.maxWaiters,
    }));
    const queue = new WakeQueue<'wake' | 'ari'>(
      core.clock,
      { wake: (slot) => this.#residency.wakeDue(slot), ari: (slot) => this.#ari.due(this.#residency.bySlot(slot)?.name) },
      (error, kind, slot) => core.logger.error({ name: this.#residency.bySlot(slot)?.name, err: safeError(error) }, `${kind === 'wake' ? 'waking a sleeping name' : 'renewal information request'} failed`),
    );
    const loads = new Loads(core, materials, (name) => this.#namesOf(name));
    const view = (this.#view = new StateView(core, materials, (record, readFromStorage) => this.#ari.certificateChanged(record, readFromStorage)));
    const machine = provideEffects({
      core,
      materials,
      loads,
      held,
      record: (name) => this.#residency.get(name),
      namesOf: (name) => this.#namesOf(name),
      beforeIssue: (attempt) => this.#admission.beforeIssue(attempt),
    });
    // The machine's own decisions (same clock, randomness, policy): the start-up question is then memoised (questions.ts).
    const decisions = chartDecisions({ now: () => core.clock.now(), random: core.random, policy: core.policy });
    const questions = chartQuestions(machine, () => core.clock.now(), settings.serveExpired, decisions);
    const pauseAfterMs = options.onDemand ? (options.onDemand.pauseAfterMs ?? DEFAULT_PAUSE_AFTER_MS) : undefined;
    const residency = (this.#residency = new Residency({ core, machine, questions, view, held, queue, inspect: options.inspect, pauseAfterMs }));
    this.#ari = new AriSchedule(core, queue, (name) => residency.get(name), (record, renewAt) => residency.sendOrAsk(record, { type: 'RENEWAL_INFO', renewAt }));
    this.#admission = new OnDemandAdmission(core, residency, options.onDemand);
    const indexStore = options.startupIndex === false ? undefined : core.storage.startupIndex;
    this.#sync = new StorageSync(core, residency, loads, view, indexStore && new StartupIndex(core, residency, loads, indexStore, options.startupIndex || {}));
    this.#records = new StartRecords(core, residency);
    this.#path = new HandshakePath(core, residency, this.#admission, loads, materials, (name) => this.#records.forHandshake(name));
    this.#defaultName = options.defaultName;
    this.#issuersMayUseTlsAlpn01 = mayUseTlsAlpn01(this.#core.issuers);
    const { storage, clock, logger, random } = core;
    this.#tickets = options.sessionTickets === false ? undefined : new SessionTickets({ storage, clock, logger }, options.sessionTickets);
    // The cleaner never touches a managed certificate nor one the engine holds (a group's other names hold nothing in storage).
    const keeps = (name: string) => this.#managed.has(name) || residency.get(name)?.name === name;
    this.#cleaner = options.storageCleaner === false ? undefined : new StorageCleaner({ storage, clock, logger, random, keeps }, options.storageCleaner);
  }

  // ─── Lifecycle ────────────────────────────────────────────────────────────

  /**
   * Start managing the configured names. Handshakes are served from the
   * moment it is called (a name not read yet is read first). Resolves once
   * each name has been read from storage, or sooner with
   * `{ waitForStorage: false }`; issuance continues in the background.
   * Calling it again waits for the same start. After `stop()` it rejects with
   * `EngineStoppedError`; a `stop()` during it closes what it opened, and it
   * resolves (a shutdown racing a start-up is not an error of its own).
   */
  async start(options: StartOptions = {}): Promise<void> {
    if (this.#stopping) throw new EngineStoppedError();
    const opening = (this.#opening ??= this.#open());
    try {
      const { scanned } = await opening;
      if (options.waitForStorage !== false) await scanned;
    } catch (error) {
      // A missing storage driver (ConfigError): nothing was opened, and start() may be called again once it is installed.
      if (this.#opening === opening) this.#opening = undefined;
      throw error;
    }
  }

  async #open(): Promise<{ scanned: Promise<void> }> {
    // A missing storage driver is a ConfigError here, not every name in storage-unreadable.
    // Records first (a handshake arriving while the watch connects must find its name), a slice at a time.
    const made = await this.#records.make(this.#managed, prepareAdapters(this.#core.storage, this.#core.issuers));
    if (!made) return { scanned: Promise.resolve() };
    const { records } = made;
    // Names without a managed record of their own (held on demand already) stay configured.
    this.#managed = made.unheld;
    const tickets = this.#tickets?.start(); // never rejects
    this.#cleaner?.start();
    await this.#sync.watch();
    if (this.#core.stopped) return { scanned: Promise.resolve() };
    const scanned = this.#sync.scan(records);
    scanned.catch((error: unknown) => this.#core.logger.error({ err: safeError(error) }, 'reading the managed names from storage failed'));
    // Serving waits for the cluster's session-ticket keys too (read from storage, or made here).
    return { scanned: Promise.all([scanned, tickets]).then(() => undefined) };
  }

  /**
   * Stop every actor, answer every waiting handshake and operator, abort
   * what is in flight (attempts, ARI and `ask` requests, queued reads) and
   * wait for it, at most `stopTimeoutMs`. Calling it again waits for the same stop.
   */
  stop(): Promise<void> {
    return (this.#stopping ??= this.#close());
  }

  async #close(): Promise<void> {
    const core = this.#core;
    core.abort(new EngineStoppedError());
    this.#path.flushLog();
    this.#admission.flushLog();
    this.#view.stop();
    const indexWritten = this.#sync.beforeStop(); // what the names hold, taken before they go
    this.#residency.stopAll();
    core.pending.stop();
    await this.#sync.unwatch();
    // A watch still connecting when stop began closes itself once connected: it is among the effects waited for.
    await Promise.all([core.settle(), this.#tickets?.stop(), this.#cleaner?.stop(), indexWritten]);
    core.removeListeners();
  }

  /**
   * Add managed names at run time, entries as in `names` (normalised; a name
   * already known is left as it is; a group whose names are already known
   * elsewhere is a `ConfigError`).
   */
  manage(names: ManagedEntry[]): void {
    this.#assertRunning();
    const added = [];
    // A group's name may belong to no other certificate; the same group again is left as it is.
    const taken = (name: string, group: readonly string[]) => belongsElsewhere(this.#residency.get(name), group);
    for (const group of managedCertificates(names, 'manage()', taken)) {
      const name = group[0]!;
      if (this.#managed.has(name) || this.#residency.holdsManaged(name) || this.#residency.get(name)?.names) continue;
      this.#managed.set(name, group.length > 1 ? group : undefined);
      if (!this.#residency.get(name)) added.push(this.#residency.add(name, true, group));
    }
    // Like start-up: read in the background, then live or asleep.
    this.#sync.scan(added).catch((error: unknown) => this.#core.logger.error({ err: safeError(error) }, 'reading managed names from storage failed'));
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
    return this.#path.getCertificate(servername, info);
  }

  /**
   * Options for `tls`/`https`/`http2` servers: an `SNICallback` answered by the
   * engine, and the application protocol (`protocols`, server preference
   * first) chosen by `ALPNProtocols` — or, when this server answers
   * TLS-ALPN-01 (an issuer may use it, or `tlsAlpn01: true`) or has a
   * `defaultName`, by an `ALPNCallback` that does that too (Node forbids
   * `ALPNProtocols` beside it, so say the protocols here). See `alpnMode`.
   *
   * A name the engine cannot serve gets a TLS alert; `defaultName` answers
   * clients without SNI (see `TlsOptionsConfig` and handshake-answers.ts).
   *
   * With session tickets on (the default, see `sessionTickets`), also a
   * `sessionIdContext` that is the same in every process; pass the server to
   * `attachServer(server)` and its session tickets are encrypted with the
   * cluster's keys, so that a session from any process resumes on any other.
   * (A server not attached is attached by the SNI callback at its first full
   * handshake.)
   */
  tlsOptions(options: TlsOptionsConfig = {}): TlsCallbacks & Partial<SessionTicketServerOptions> {
    const { storage, logger } = this.#core;
    const callbacks = answerHandshakes(this.#path.sniCallback(), {
      rejections: this.#path.rejections,
      defaultName: this.#defaultName,
      onRefusal: options.onRefusal,
      protocols: options.protocols,
      tlsAlpn01: options.tlsAlpn01,
      issuersMayUseTlsAlpn01: this.#issuersMayUseTlsAlpn01,
      tlsAlpn01Responder: (protocols) => createTlsAlpnResponder(storage, { protocols, logger }),
    });
    if (!this.#tickets) return callbacks;
    return { ...callbacks, SNICallback: this.#tickets.wrapSNICallback(callbacks.SNICallback), ...this.#tickets.serverOptions() };
  }

  /**
   * Have a TLS server (created with `tlsOptions()`) encrypt and decrypt its
   * session tickets with the cluster's keys from now on, through every
   * rotation. Call it right after creating the server; idempotent. (The SNI
   * callback attaches a server at its first full handshake anyway, but until
   * then a new process cannot resume the cluster's sessions.) No-op with
   * `sessionTickets: false`.
   */
  attachServer(server: TlsServer): void {
    this.#tickets?.attach(server);
  }

  /**
   * An `http` request handler that answers ACME HTTP-01 challenges (from
   * storage, so any process of a cluster can answer) and passes every other
   * request to `next` (default: 404). Works as Express middleware too.
   */
  httpChallengeHandler(next?: HttpFallback): HttpChallengeHandler {
    return createHttpChallengeHandler(this.#core.storage, next);
  }

  // ─── Operating ────────────────────────────────────────────────────────────

  /**
   * Status of every name the engine holds: one object per name. At many
   * names prefer `statusPage()`, `statuses()` or `statusSummary()`.
   */
  status(): NameStatus[] {
    return Array.from(this.#residency.records(), (record) => this.#residency.statusOf(record));
  }

  /**
   * One page of names' status (default 100, at most 10,000), filtered by state,
   * managed or not, or a part of the name; pass the page's `next` as `after`
   * for the following one. Names before the cursor cost no object. Bad input
   * is a `ConfigError`.
   */
  statusPage(query: StatusQuery = {}): StatusPage {
    return statusPage(this.#residency.records(), query, (record) => this.#residency.statusOf(record));
  }

  /** Every name's status (filtered), one at a time, yielding to the event loop every 1,024 names. */
  statuses(filter: StatusFilter = {}): AsyncGenerator<NameStatus, void, undefined> {
    const residency = this.#residency;
    return walkStatuses(residency.records(), filter, (record) => this.#residency.statusOf(record), (record) => residency.get(record.name) === record);
  }

  /** Counts by state (kept as states change, O(1)) and expiry counts (one pass over the names, no object per name). */
  statusSummary(options: StatusSummaryOptions = {}): StatusSummary {
    return summarize(this.#residency.records(), this.#residency.size, this.#view.counts, this.#core.clock.now(), options);
  }

  /** Status of one name (O(1)), or undefined when the engine does not hold it. */
  statusOf(servername: string): NameStatus | undefined {
    let name: string;
    try {
      name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    } catch {
      return undefined;
    }
    const record = this.#residency.get(name);
    return record && this.#residency.statusOf(record);
  }

  /** What the engine holds in memory right now. */
  get stats(): EngineStats {
    return {
      names: this.#residency.size,
      liveActors: this.#residency.liveActors,
      sleeping: this.#residency.sleeping,
      cachedCertificates: this.#materials.size,
      waitingHandshakes: this.#held.handshakes,
    };
  }

  /** Ids of the configured issuers, in the order they are tried. */
  get issuerIds(): string[] {
    return this.#core.issuers.map((i) => i.id);
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
   * Start one attempt now, whatever the renewal time or backoff (an attempt
   * already in flight is joined, not duplicated; a name whose storage is
   * being read, or could not be read, is read first). Resolves with that
   * attempt's certificate, or rejects with its error (`CertificateUnavailableError`),
   * the storage's (`CertificateUnavailableError`), `EngineStoppedError`, or
   * `OperatorTimeoutError` after `timeoutMs` (the attempt goes on).
   */
  async forceRenew(servername: string, options: ForceRenewOptions = {}): Promise<CertificateMeta> {
    this.#assertRunning();
    const name = normalizeName(servername, { allowWildcard: true, allowIp: true });
    const record = this.#residency.get(name);
    if (!record) throw new NameNotAllowedError(name, 'unknown name');
    const timeoutMs = positive(options.timeoutMs, this.#core.settings.operatorTimeout, 'timeoutMs');
    return requestAttempt({ clock: this.#core.clock, held: this.#held, residency: this.#residency }, record, name, timeoutMs);
  }

  /**
   * Re-read a name's stored certificate and adopt it if another process stored
   * a newer one (the statechart's `STORAGE_CHANGED`; no order is placed).
   * Resolves `true` when the stored certificate was newer and is now served.
   */
  async refreshFromStorage(servername: string): Promise<boolean> {
    this.#assertRunning();
    const record = this.#residency.get(normalizeName(servername, { allowWildcard: true, allowIp: true }));
    return record ? this.#sync.refresh(record) : false;
  }

  /** Subscribe to an engine event. Returns an unsubscribe function. */
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void {
    return this.#core.on(type, listener);
  }

  /** The engine's clock (useful for tests and status pages). */
  get clock(): Clock {
    return this.#core.clock;
  }

  /** The storage the engine was configured with. */
  get storage(): Storage {
    return this.#core.storage;
  }

  /** The names of the certificate stored under `name` (its key): all of a group's, else the name alone. */
  #namesOf(name: string): readonly string[] {
    const record = this.#residency.get(name);
    return record?.name === name && record.names ? record.names : [name];
  }

  #assertRunning(): void {
    if (this.#stopping) throw new EngineStoppedError();
    if (!this.#opening) throw new ConfigError('call engine.start() first');
  }

  /** @internal For tests: resolves when no session-ticket step or storage-cleaner run is in flight. */
  async _maintenanceSettled(): Promise<void> {
    await Promise.all([this.#tickets?.settled(), this.#cleaner?.settled()]);
  }

  /** @internal For tests: the bundle behind a fingerprint. */
  _bundle(fingerprint: string): CertificateBundle | undefined {
    return this.#materials.bundle(fingerprint);
  }
}

/** Map a snapshot value to the lifecycle state name shown to users (see `lifecycleStateOf`). */
export const stateOf = lifecycleStateOf;

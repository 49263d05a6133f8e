/**
 * ARI scheduling (RFC 9773): ask a certificate's issuer for its suggested
 * renewal window, hand the chart a uniform random time inside it
 * (RENEWAL_INFO), and ask again when the CA says (Retry-After, clamped to
 * 1 min – 1 day). Rechecks go through the engine's one wake heap (kind
 * `ari`), not a timer per name, due on whole seconds (`ariDueAt`: the names
 * due within a second share one wake-up); requests are aborted when the
 * engine stops.
 */
import { safeError } from '../safe-error.js';
import type { CertificateMeta, IssueContext, Logger, RenewalInfo, Storage } from '../types.js';
import { ariDueAt, ariRenewalTime, ARI_DEFAULT_RECHECK_MS, clampAriRecheck } from './ari.js';
import type { EngineCore } from './core.js';
import type { NameRecord } from './name-record.js';
import type { WakeQueue } from './wake-queue.js';

/** Deadline of one renewal-information request. */
const ARI_REQUEST_TIMEOUT_MS = 30_000;

export class AriSchedule {
  readonly #core: EngineCore;
  readonly #queue: WakeQueue<'wake' | 'ari'>;
  readonly #record: (name: string) => NameRecord | undefined;
  readonly #onRenewalInfo: (record: NameRecord, renewAt: number) => void;
  /** The engine's clock, as every request's context gives it. */
  readonly #now: () => number;

  /**
   * @param record the record of a name, if the engine still holds it
   * @param onRenewalInfo hands the chart the renewal time drawn from the CA's window
   */
  constructor(
    core: EngineCore,
    queue: WakeQueue<'wake' | 'ari'>,
    record: (name: string) => NameRecord | undefined,
    onRenewalInfo: (record: NameRecord, renewAt: number) => void,
  ) {
    this.#core = core;
    this.#queue = queue;
    this.#record = record;
    this.#onRenewalInfo = onRenewalInfo;
    this.#now = () => core.clock.now();
  }

  /**
   * A name's certificate changed: ask about it at once (off the caller's stack), or, for one
   * read from storage, after a random part of the recheck interval (a restart with many names
   * is not that many requests to the CA at once).
   */
  certificateChanged(record: NameRecord, readFromStorage: boolean): void {
    this.#queue.cancel('ari', record.slot);
    if (!this.#issuerOf(record)) return;
    const delayMs = readFromStorage ? Math.max(1, Math.round(this.#core.random() * ARI_DEFAULT_RECHECK_MS)) : 0;
    if (delayMs > 0) return this.#queue.schedule('ari', record.slot, ariDueAt(this.#core.clock.now() + delayMs));
    const fingerprint = record.certificate?.fingerprint;
    setImmediate(() => {
      if (record.certificate?.fingerprint === fingerprint) this.#core.guard('renewal information request', () => this.due(record.name), { name: record.name });
    });
  }

  /** A name's recheck is due (the wake heap), or its new certificate is to be asked about: ask its issuer. */
  due(name: string | undefined): void {
    if (name === undefined) return; // the name went before its recheck
    const record = this.#record(name);
    const meta = record?.certificate;
    const issuer = record && this.#issuerOf(record);
    if (!record || !meta || !issuer || this.#core.stopped) return;
    const request = new AriRequest(this.#core, name, issuer.id, this.#now);
    let asked: Promise<RenewalInfo | undefined>;
    try {
      asked = Promise.resolve(issuer.renewalInfo!(meta, request));
    } catch (error) {
      asked = Promise.reject(error); // a synchronous throw is a failed request like any other
    }
    this.#core.track(asked).then(
      (info) => this.#answered(request, record, meta, info),
      (error: unknown) => this.#failed(request, record, meta, error),
    );
  }

  #answered(request: AriRequest, record: NameRecord, meta: CertificateMeta, info: RenewalInfo | undefined): void {
    request.done();
    if (!this.#current(record, meta)) return;
    const now = this.#core.clock.now();
    const renewAt = info ? ariRenewalTime(info, now, this.#core.random()) : undefined;
    if (renewAt !== undefined) this.#onRenewalInfo(record, renewAt);
    if (this.#current(record, meta)) this.#queue.schedule('ari', record.slot, ariDueAt(now + clampAriRecheck(info?.retryAfter, now)));
  }

  #failed(request: AriRequest, record: NameRecord, meta: CertificateMeta, error: unknown): void {
    request.done();
    this.#core.logger.debug({ name: record.name, err: safeError(error) }, 'renewal information unavailable');
    if (this.#current(record, meta)) this.#queue.schedule('ari', record.slot, ariDueAt(this.#core.clock.now() + ARI_DEFAULT_RECHECK_MS));
  }

  /** The answer is still wanted: the engine runs, holds the name, and the name still has the certificate asked about. */
  #current(record: NameRecord, meta: CertificateMeta): boolean {
    return !this.#core.stopped && this.#record(record.name) === record && record.certificate?.fingerprint === meta.fingerprint;
  }

  #issuerOf(record: NameRecord) {
    const issuerId = record.certificate?.issuerId;
    return issuerId === undefined ? undefined : this.#core.issuers.find((i) => i.id === issuerId && typeof i.renewalInfo === 'function');
  }
}

/**
 * One renewal-information request, and the issuer's context for it. Its
 * signal (aborted by the engine's stop, or at the request's deadline) and
 * its logger are made when the issuer first reads them: an issuer that
 * answers from what it holds, without I/O, costs no controller, listener,
 * timer or child logger per recheck (a million names are ~2,800 rechecks a
 * minute). No closure per request either: the engine's abort reaches it as
 * an `EventListener` object (`handleEvent`).
 * (A controller of its own, not `AbortSignal.any` with `AbortSignal.timeout`:
 * at a million names that is a dependent signal and a native timer per
 * request kept for the collector — whole seconds of CPU a minute.)
 */
class AriRequest implements IssueContext {
  readonly storage: Storage;
  /** The engine's clock (an own property, shared by every request: `const { now } = context` works). */
  readonly now: () => number;
  readonly #core: EngineCore;
  readonly #name: string;
  readonly #issuerId: string;
  readonly #askedAt = performance.now();
  #controller: AbortController | undefined;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  #logger: Logger | undefined;

  constructor(core: EngineCore, name: string, issuerId: string, now: () => number) {
    this.#core = core;
    this.#name = name;
    this.#issuerId = issuerId;
    this.storage = core.storage;
    this.now = now;
  }

  get signal(): AbortSignal {
    if (this.#controller) return this.#controller.signal;
    const controller = (this.#controller = new AbortController());
    const engine = this.#core.signal;
    if (engine.aborted) controller.abort(engine.reason);
    else {
      engine.addEventListener('abort', this, { once: true });
      // The deadline counts from the request, not from the issuer's first look at the signal.
      const left = Math.max(0, ARI_REQUEST_TIMEOUT_MS - (performance.now() - this.#askedAt));
      this.#deadline = setTimeout(() => controller.abort(new Error(`renewal information request: no answer within ${ARI_REQUEST_TIMEOUT_MS} ms`)), left);
      this.#deadline.unref?.();
    }
    return controller.signal;
  }

  get logger(): Logger {
    return (this.#logger ??= this.#core.logger.child({ name: this.#name, issuer: this.#issuerId }));
  }

  /** The engine stops (its signal's `abort`, with this request as the listener). */
  handleEvent(): void {
    this.#controller?.abort(this.#core.signal.reason);
  }

  /** The request ended: its deadline and its listener go. */
  done(): void {
    if (!this.#controller) return;
    clearTimeout(this.#deadline);
    this.#core.signal.removeEventListener('abort', this);
  }
}

/**
 * ARI scheduling (RFC 9773): ask a certificate's issuer for its suggested
 * renewal window, hand the chart a uniform random time inside it
 * (RENEWAL_INFO), and ask again when the CA says (Retry-After, clamped to
 * 1 min – 1 day). Rechecks go through the engine's one wake heap (kind
 * `ari`), not a timer per name; requests are aborted when the engine stops.
 */
import { safeError } from '../safe-error.js';
import type { IssueContext, RenewalInfo } from '../types.js';
import { ariRenewalTime, ARI_DEFAULT_RECHECK_MS, clampAriRecheck } from './ari.js';
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
    if (delayMs > 0) return this.#queue.schedule('ari', record.slot, this.#core.clock.now() + delayMs);
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
    const core = this.#core;
    const askedAt = performance.now();
    // The request's signal (aborted by the engine's stop, or at its deadline) and its logger are made when the
    // issuer first reads them: an issuer that answers from what it holds, without I/O, costs no controller,
    // listener, timer or child logger per recheck (a million names are ~2,800 rechecks a minute).
    // (A controller of its own, not AbortSignal.any with AbortSignal.timeout: at a million names that is a
    // dependent signal and a native timer per request kept for the collector — whole seconds of CPU a minute.)
    let request: AbortController | undefined;
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const abort = () => request!.abort(core.signal.reason);
    const signal = (): AbortSignal => {
      if (request) return request.signal;
      request = new AbortController();
      if (core.signal.aborted) abort();
      else {
        core.signal.addEventListener('abort', abort, { once: true });
        const left = Math.max(0, ARI_REQUEST_TIMEOUT_MS - (performance.now() - askedAt));
        deadline = setTimeout(() => request!.abort(new Error(`renewal information request: no answer within ${ARI_REQUEST_TIMEOUT_MS} ms`)), left);
        deadline.unref?.();
      }
      return request.signal;
    };
    const done = () => {
      if (!request) return;
      clearTimeout(deadline);
      core.signal.removeEventListener('abort', abort);
    };
    let logger: IssueContext['logger'] | undefined;
    const context: IssueContext = {
      get signal() {
        return signal();
      },
      get logger() {
        return (logger ??= core.logger.child({ name, issuer: issuer.id }));
      },
      storage: core.storage,
      now: this.#now,
    };
    let asked: Promise<RenewalInfo | undefined>;
    try {
      asked = Promise.resolve(issuer.renewalInfo!(meta, context));
    } catch (error) {
      asked = Promise.reject(error); // a synchronous throw is a failed request like any other
    }
    const current = () => !core.stopped && this.#record(name) === record && record.certificate?.fingerprint === meta.fingerprint;
    core.track(asked).then(
      (info) => {
        done();
        if (!current()) return;
        const now = core.clock.now();
        const renewAt = info ? ariRenewalTime(info, now, core.random()) : undefined;
        if (renewAt !== undefined) this.#onRenewalInfo(record, renewAt);
        if (current()) this.#queue.schedule('ari', record.slot, now + clampAriRecheck(info?.retryAfter, now));
      },
      (error: unknown) => {
        done();
        core.logger.debug({ name, err: safeError(error) }, 'renewal information unavailable');
        if (current()) this.#queue.schedule('ari', record.slot, core.clock.now() + ARI_DEFAULT_RECHECK_MS);
      },
    );
  }

  #issuerOf(record: NameRecord) {
    const issuerId = record.certificate?.issuerId;
    return issuerId === undefined ? undefined : this.#core.issuers.find((i) => i.id === issuerId && typeof i.renewalInfo === 'function');
  }
}

/**
 * ARI scheduling (RFC 9773): ask a certificate's issuer for its suggested
 * renewal window, hand the chart a uniform random time inside it
 * (RENEWAL_INFO), and ask again when the CA says (Retry-After, clamped to
 * 1 min – 1 day). Rechecks go through the engine's one wake heap (kind
 * `ari`), not a timer per name; requests are aborted when the engine stops.
 */
import { safeError } from '../safe-error.js';
import type { RenewalInfo } from '../types.js';
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
    // A controller of its own, aborted by the engine's stop or the deadline, both removed when the request ends.
    // (Not AbortSignal.any with AbortSignal.timeout: at a million names that is a dependent signal and a
    // native timer per request kept for the collector — whole seconds of CPU a minute, measured by bench:scale.)
    const request = new AbortController();
    const abort = () => request.abort(core.signal.reason);
    core.signal.addEventListener('abort', abort, { once: true });
    const deadline = setTimeout(() => request.abort(new Error(`renewal information request: no answer within ${ARI_REQUEST_TIMEOUT_MS} ms`)), ARI_REQUEST_TIMEOUT_MS);
    deadline.unref?.();
    const done = () => {
      clearTimeout(deadline);
      core.signal.removeEventListener('abort', abort);
    };
    const signal = request.signal;
    const context = { signal, logger: core.logger.child({ name, issuer: issuer.id }), storage: core.storage, now: () => core.clock.now() };
    let asked: Promise<RenewalInfo | undefined>;
    try {
      asked = Promise.resolve(issuer.renewalInfo!(meta, context));
    } catch (error) {
      asked = Promise.reject(error); // a synchronous throw is a failed request like any other
    }
    const current = () => !core.stopped && this.#record(name) === record && record.certificate?.fingerprint === meta.fingerprint;
    core.track(asked.finally(done)).then(
      (info) => {
        if (!current()) return;
        const now = core.clock.now();
        const renewAt = info ? ariRenewalTime(info, now, core.random()) : undefined;
        if (renewAt !== undefined) this.#onRenewalInfo(record, renewAt);
        if (current()) this.#queue.schedule('ari', record.slot, now + clampAriRecheck(info?.retryAfter, now));
      },
      (error: unknown) => {
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

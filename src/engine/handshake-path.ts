/**
 * The handshake path: what a TLS handshake for a server name gets, in this
 * order (like CertMagic's `GetCertificate`):
 *
 * 1. The SNI value is normalised; a hostile one is refused with
 *    `InvalidNameError` (counted, and logged at most once a minute).
 * 2. The name's record: the exact name; else the managed wildcard covering it
 *    (exactly one label); else on-demand admission, which asks permission (a
 *    refused name costs no actor and no storage write).
 * 3. The answer the chart gives at once in the name's state (its tags,
 *    memoised by the state view): a certificate whose key material is in
 *    memory → its `SecureContext` (no I/O, no event; the SNI callback answers
 *    synchronously); a refusal → the recorded error, one error object shared
 *    by every handshake it refuses.
 * 4. A certificate the chart serves whose key material is not in memory
 *    (evicted, or its name slept) → one storage read shared by every
 *    handshake asking, then 3.
 * 5. Otherwise the chart holds handshakes (loading, obtaining,
 *    expired-renewing): a HANDSHAKE event to the name's actor (woken if it
 *    sleeps or was never read), answered with the one outcome of what is in
 *    flight, or by the handshake's own deadline (`handshakeTimeout`).
 *
 * No step starts an attempt.
 */
import type { SecureContext, TLSSocket } from 'node:tls';
import { CertificateUnavailableError, EngineStoppedError, HandshakeTimeoutError, InvalidCertificateError, TooManyWaitersError } from '../errors.js';
import { keys } from '../storage-keys.js';
import { TAGS, type HandshakeAnswer, type HandshakeReply, type LoadedState } from '../machines/certificate.js';
import type { ErrorInfo } from '../types.js';
import { InvalidNameError, RejectionLog, normalizeName } from '../names.js';
import type { OnDemandAdmission } from './admission.js';
import type { EngineCore } from './core.js';
import type { Loads } from './loads.js';
import type { MaterialCache } from './material-cache.js';
import type { NameRecord } from './name-record.js';
import type { HandshakeInfo, ServedCertificate } from './options.js';
import type { Residency } from './residency.js';
import { isUnverified } from './stored-meta.js';

/** An answer refusing a handshake: the recorded error, and when to try again. */
type Refusal = Extract<HandshakeAnswer, { ok: false; error: unknown }>;

/** Node's `SNICallback`, called as a method of the `TLSSocket` being handshaken. */
export type SNICallback = (this: TLSSocket | undefined, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;

export class HandshakePath {
  readonly #core: EngineCore;
  readonly #residency: Residency;
  readonly #admission: OnDemandAdmission;
  readonly #loads: Loads;
  readonly #materials: MaterialCache;
  /** Rejected server names and refused handshakes, counted and logged at most once a minute (also by handshake-answers.ts). */
  readonly rejections: RejectionLog<string>;
  /** One served certificate (or error) per released answer, and one error per recorded error, shared by every handshake they answer. */
  readonly #sharedServed = new WeakMap<HandshakeAnswer, ServedCertificate | Error>();
  readonly #sharedErrors = new WeakMap<ErrorInfo, { nextAttemptAt?: number; error: Error }>();
  /** Certificates OpenSSL refused, already being replaced. */
  readonly #repairing = new Set<string>();

  /** A configured name whose record `start()` has not made yet: made now (undefined: none to make). */
  readonly #configured: (name: string) => Promise<NameRecord | undefined> | undefined;

  constructor(
    core: EngineCore,
    residency: Residency,
    admission: OnDemandAdmission,
    loads: Loads,
    materials: MaterialCache,
    configured: (name: string) => Promise<NameRecord | undefined> | undefined = () => undefined,
  ) {
    this.#core = core;
    this.#configured = configured;
    this.#residency = residency;
    this.#admission = admission;
    this.#loads = loads;
    this.#materials = materials;
    this.rejections = new RejectionLog<string>({ logger: core.logger, now: () => core.clock.now() });
  }

  /** The certificate for a name, as a handshake gets it (steps 1–5). */
  async getCertificate(servername: string, info: HandshakeInfo = {}): Promise<ServedCertificate> {
    if (this.#core.stopped) throw new EngineStoppedError();
    let name: string;
    try {
      name = normalizeName(servername);
    } catch (error) {
      // Counted and logged once per interval: a flood of hostile SNI must not become a flood of log lines.
      if (error instanceof InvalidNameError) this.rejections.recordError(error);
      throw error;
    }
    const startedAt = this.#core.clock.now();
    try {
      const record =
        this.#residency.get(name) ?? this.#residency.managedWildcardFor(name) ?? (await this.#configured(name)) ?? (await this.#admit(name, servername, info));
      let served = this.#fromMemo(record);
      if (!served && this.#servesFromStorage(record)) {
        await this.#reloadMaterial(record);
        served = this.#fromMemo(record);
      }
      const immediate = served !== undefined;
      if (!served) {
        // (Synchronous unless the name is paused: a held handshake's deadline starts now.)
        let answer = await this.#ask(record, this.#paused(record) ? await this.#resume(record, servername, info) : false);
        // Held while the name was read, and it turned out paused: this handshake may resume it too.
        if (!answer.ok && !('stopped' in answer) && this.#paused(record)) answer = await this.#ask(record, await this.#resume(record, servername, info));
        // (A certificate OpenSSL refused is being replaced: reading it again would not help.)
        if (answer.ok && !this.#materials.has(answer.fingerprint) && !this.#repairing.has(answer.fingerprint)) await this.#reloadMaterial(record);
        served = this.#served(record, answer);
      }
      if (this.#core.listens('handshake')) {
        const waitedMs = this.#core.clock.now() - startedAt;
        this.#core.publish({ type: 'handshake', name, outcome: immediate || waitedMs === 0 ? 'immediate' : 'waited', waitedMs });
      }
      return served;
    } catch (error) {
      if (this.#core.listens('handshake')) {
        this.#core.publish({ type: 'handshake', name, outcome: 'failed', waitedMs: this.#core.clock.now() - startedAt, errorType: (error as Error).name });
      }
      throw error;
    }
  }

  /**
   * The `SNICallback`: synchronous when the chart's answer is at hand (step
   * 3: no promise; for a name in its normalised form, the usual SNI, no
   * allocation either), else through `getCertificate`, with the peer's address
   * for on-demand decisions (Node calls it as a method of the `TLSSocket`).
   */
  sniCallback(): SNICallback {
    const path = this;
    return function certstateSNI(servername, cb) {
      const atOnce = path.#atOnce(servername);
      if (atOnce instanceof Error) return cb(atOnce);
      if (atOnce) return cb(null, atOnce);
      path.getCertificate(servername, { remoteAddress: this?.remoteAddress }).then(
        (served) => cb(null, served.secureContext),
        (error: Error) => cb(error),
      );
    };
  }

  /** Step 3 for the SNI callback: the context, or the shared refusal, when the chart's answer is at hand; undefined to take the full path. */
  #atOnce(servername: string): SecureContext | Error | undefined {
    if (this.#core.stopped) return undefined;
    const record = this.#residency.get(servername) ?? this.#normalisedRecord(servername);
    const answer = record?.answer;
    if (!record || !answer) return undefined;
    let result: SecureContext | Error | undefined;
    if (answer.ok) result = this.#servable(record, answer) ? this.#materials.secureContext(answer.fingerprint) : undefined;
    else result = this.#sharedError(record, answer);
    if (result && this.#core.listens('handshake')) {
      const errorType = result instanceof Error ? { errorType: result.name } : undefined;
      this.#core.publish({ type: 'handshake', name: record.name, outcome: errorType ? 'failed' : 'immediate', waitedMs: 0, ...errorType });
    }
    return result;
  }

  /** The record for a name not given in its normalised form (or covered by a managed wildcard); undefined when it is invalid or unknown. */
  #normalisedRecord(servername: string): NameRecord | undefined {
    let name: string;
    try {
      name = normalizeName(servername);
    } catch {
      return undefined; // the full path refuses it, counted and logged
    }
    return this.#residency.get(name) ?? this.#residency.managedWildcardFor(name);
  }

  /** Step 3: the memoised answer, as a served certificate (built per call) or a thrown shared error; undefined to go on. */
  #fromMemo(record: NameRecord): ServedCertificate | undefined {
    const answer = record.answer;
    if (answer === undefined) return undefined;
    if (!answer.ok) throw this.#sharedError(record, answer);
    if (!this.#servable(record, answer) || !this.#materials.secureContext(answer.fingerprint)) return undefined;
    const result = this.#certificateOf(record, answer);
    if (result instanceof Error) throw result;
    return result;
  }

  /** A memoised certificate answer still stands: not expired, unless the chart serves it expired. */
  #usable(record: NameRecord, answer: Extract<HandshakeAnswer, { ok: true }>): boolean {
    return answer.expired || (record.certificate !== undefined && this.#core.clock.now() < record.certificate.notAfter);
  }

  /**
   * A memoised answer may be served from memory: usable, and its metadata
   * not taken unparsed from storage (the start-up scan's: its certificate is
   * read and parsed first, step 4, whatever the cache holds under that fingerprint).
   */
  #servable(record: NameRecord, answer: Extract<HandshakeAnswer, { ok: true }>): boolean {
    return this.#usable(record, answer) && !isUnverified(record.certificate);
  }

  /** Step 4 applies: the chart serves a certificate whose key material is not in memory, or whose metadata is not checked yet. */
  #servesFromStorage(record: NameRecord): boolean {
    const answer = record.answer;
    if (answer?.ok !== true || !this.#usable(record, answer)) return false;
    return isUnverified(record.certificate) || (!this.#materials.has(answer.fingerprint) && !this.#repairing.has(answer.fingerprint));
  }

  #reloadMaterial(record: NameRecord): Promise<void> {
    return this.#loads.reloadMaterial(record, (loaded: LoadedState, unverified: boolean) => {
      // The stored metadata the name slept on was wrong: it wakes from the certificate as parsed.
      if (unverified) this.#residency.adoptParsed(record, loaded);
      // Another process stored a different certificate meanwhile: the chart decides whether to adopt it.
      else if (loaded.certificate) this.#residency.sendOrAsk(record, { type: 'STORAGE_CHANGED', certificate: loaded.certificate });
    });
  }

  async #admit(name: string, servername: string, info: HandshakeInfo): Promise<NameRecord> {
    const record = await this.#admission.admit(name, servername, info);
    if (this.#core.stopped) throw new EngineStoppedError();
    return record;
  }

  /** The chart has paused the name (tag `resumes`): a handshake resumes it only with permission asked afresh. */
  #paused(record: NameRecord): boolean {
    return record.actor?.getSnapshot().hasTag(TAGS.resumes) === true;
  }

  /** Ask permission afresh for a paused name: true when given (the refusal is thrown otherwise). */
  async #resume(record: NameRecord, servername: string, info: HandshakeInfo): Promise<boolean> {
    await this.#admission.recheck(record, servername, info);
    return true;
  }

  /**
   * Step 5: a HANDSHAKE event to the name's actor (woken if needed), and its
   * one answer; a RESUME instead when `resume` and the chart still takes it.
   */
  #ask(record: NameRecord, resume = false): Promise<HandshakeAnswer> {
    return new Promise<HandshakeAnswer>((resolve) => {
      let answered = false;
      const reply: HandshakeReply = (answer) => {
        if (answered) return;
        answered = true;
        resolve(answer);
      };
      const actor = this.#residency.wake(record, true);
      const resumed = { type: 'RESUME' as const, reply };
      actor.send(resume && actor.getSnapshot().can(resumed) ? resumed : { type: 'HANDSHAKE', reply });
      // A stopped actor ignores events: answer rather than hang.
      if (actor.getSnapshot().status !== 'active') reply({ ok: false, stopped: true });
    });
  }

  /**
   * Turn an answer into what a handshake gets. One answer object is given to
   * every handshake a release (or a memoised refusal) answers, so the result
   * is built once per answer and shared: 10,000 waiters get one error object,
   * not 10,000 stack captures.
   */
  #served(record: NameRecord, answer: HandshakeAnswer): ServedCertificate {
    if ('stopped' in answer) throw new EngineStoppedError();
    if (!answer.ok) throw this.#sharedError(record, answer);
    let shared = this.#sharedServed.get(answer);
    if (shared === undefined) this.#sharedServed.set(answer, (shared = this.#certificateOf(record, answer)));
    if (shared instanceof Error) throw shared;
    return shared;
  }

  /** The error of a refusal, keyed by its recorded error (the same object for a whole backoff). */
  #sharedError(record: NameRecord, refusal: Refusal): Error {
    const shared = this.#sharedErrors.get(refusal.error);
    if (shared !== undefined && shared.nextAttemptAt === refusal.nextAttemptAt) return shared.error;
    const error = this.#errorOf(record, refusal);
    this.#sharedErrors.set(refusal.error, { nextAttemptAt: refusal.nextAttemptAt, error });
    return error;
  }

  /** A certificate answer as a served certificate, built per call (a memoised answer has nothing to share with). */
  #certificateOf(record: NameRecord, answer: Extract<HandshakeAnswer, { ok: true }>): ServedCertificate | Error {
    const pems = this.#materials.pems(answer.fingerprint);
    const secureContext = this.#materials.secureContext(answer.fingerprint);
    const meta = record.certificate;
    if (!pems || !secureContext || meta?.fingerprint !== answer.fingerprint) {
      // Not readable from storage, or refused by OpenSSL (e.g. a key that does not match): not servable.
      if (pems && !secureContext) this.#repair(record);
      return new CertificateUnavailableError(record.name, { type: 'CertificateUnavailableError', message: 'the stored certificate could not be read or used', at: this.#core.clock.now() });
    }
    // The PEMs stay bytes outside the heap (this answer is kept per name) and are decoded when read: own enumerable getters, so a spread or JSON sees them as fields.
    return {
      meta,
      secureContext,
      get certificatePem() {
        return pems.certificatePem();
      },
      get privateKeyPem() {
        return pems.privateKeyPem();
      },
      expired: answer.expired,
    };
  }

  #errorOf(record: NameRecord, refusal: Refusal): Error {
    switch (refusal.error.type) {
      case 'HandshakeTimeoutError':
        return new HandshakeTimeoutError(record.name, this.#core.settings.handshakeTimeout);
      case 'TooManyWaitersError':
        return new TooManyWaitersError(record.name, this.#core.settings.maxWaitersPerName);
      default:
        return new CertificateUnavailableError(record.name, refusal.error, refusal.nextAttemptAt);
    }
  }

  /**
   * A stored certificate OpenSSL refuses (its key does not match: stored
   * metadata is read without parsing the key, which OpenSSL checks when the
   * context is built): replace it with a new one, once per certificate.
   */
  #repair(record: NameRecord): void {
    const fingerprint = record.certificate?.fingerprint;
    if (fingerprint === undefined || this.#repairing.has(fingerprint) || this.#core.stopped) return;
    this.#repairing.add(fingerprint);
    // Reported once for the stored value: the attempt's strict re-read of it does not warn again.
    const refused = new InvalidCertificateError('OpenSSL refused the stored certificate with its key (the key does not match it?)');
    this.#core.corrupt.report(keys.certificate(record.name), record.name, refused, 'the stored certificate cannot be served (its key does not match it?): obtaining a new one');
    this.#materials.delete(fingerprint);
    this.#residency.wake(record, true).send({ type: 'FORCE_RENEW' });
  }

  /** Write the pending summary of refused SNI values now (engine stop). */
  flushLog(): void {
    this.rejections.flush();
  }
}

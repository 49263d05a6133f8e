/**
 * The state view: what the outside sees of each name — its lifecycle state,
 * its certificate, its status, and the answer a handshake gets at once — read
 * only from the chart: an actor's snapshots, or for a name without an actor
 * the snapshot the chart's questions give. Nothing here decides: the answer
 * is the one the chart's tags name (`answerOf`).
 *
 * Showing a snapshot also logs one line per transition, publishes
 * `state_changed`, drops the key material of a certificate no longer in use,
 * and tells ARI scheduling about a new certificate.
 */
import { lifecycleStateOf, refusalOf, TAGS, type ImmediateAnswer } from '../machines/certificate.js';
import type { CertificateSnapshot } from '../machines/questions.js';
import type { NameStatus } from '../types.js';
import type { EngineCore } from './core.js';
import type { MaterialCache } from './material-cache.js';
import type { NameRecord, SleepingName } from './name-record.js';
import { StateCounts } from './status-query.js';

/**
 * The answer the chart gives a handshake at once in this snapshot, by its
 * tags; undefined where it holds handshakes. A certificate answer is served
 * only while the certificate has not expired, unless the chart serves it expired.
 */
export function answerOf(snapshot: CertificateSnapshot): ImmediateAnswer | undefined {
  const { certificate } = snapshot.context;
  if (certificate && snapshot.hasTag(TAGS.servesCertificate)) return { ok: true, fingerprint: certificate.fingerprint, expired: false };
  if (certificate && snapshot.hasTag(TAGS.servesExpiredCertificate)) return { ok: true, fingerprint: certificate.fingerprint, expired: true };
  if (snapshot.hasTag(TAGS.refuses)) return refusalOf(snapshot.context);
  return undefined;
}

/** Both answers serve the same certificate, expired or not alike. */
function sameCertificateAnswer(a: ImmediateAnswer | undefined, b: ImmediateAnswer | undefined): boolean {
  return a !== undefined && b !== undefined && a.ok && b.ok && a.fingerprint === b.fingerprint && a.expired === b.expired;
}

export class StateView {
  readonly #core: EngineCore;
  readonly #materials: MaterialCache;
  readonly #onNewCertificate: (record: NameRecord, readFromStorage: boolean) => void;
  /** Names the start-up scan waits for, until they leave `loading`. */
  readonly #untilRead = new Map<NameRecord, Array<() => void>>();
  /** Names per shown state (residency counts names in and out; a change of state moves one). */
  readonly counts = new StateCounts();

  /** @param onNewCertificate told when a name's certificate changes (for ARI), and whether it was read from storage */
  constructor(core: EngineCore, materials: MaterialCache, onNewCertificate: (record: NameRecord, readFromStorage: boolean) => void) {
    this.#core = core;
    this.#materials = materials;
    this.#onNewCertificate = onNewCertificate;
  }

  /**
   * Show a name's snapshot (from its actor, or from the chart's questions
   * for a name without one).
   */
  show(record: NameRecord, snapshot: CertificateSnapshot): void {
    const state = lifecycleStateOf(snapshot.value);
    // A name woken from sleep reloads its known record: to the outside it stays as it was.
    if (record.waking && state === 'loading') return;
    record.waking = false;
    const { context } = snapshot;
    const previous = record.certificate;
    record.certificate = context.certificate;
    const answer = answerOf(snapshot);
    // The same certificate served the same way: the record keeps its object (a sleeping name's ARI recheck writes nothing).
    record.answer = sameCertificateAnswer(record.answer, answer) ? record.answer : answer;
    if (context.certificate?.fingerprint !== previous?.fingerprint) {
      if (previous !== undefined) this.#materials.delete(previous.fingerprint);
      // A certificate just issued or adopted asks for its renewal window at once. One read from storage
      // (leaving `loading` with none before) waits a random part of the recheck interval, live or asleep:
      // a restart with a million names, or a thousand live ones, is not that many requests to the CA at once.
      const readFromStorage = previous === undefined && record.state === 'loading';
      if (context.certificate !== undefined) this.#onNewCertificate(record, readFromStorage);
    }
    if (state !== 'loading') this.#read(record);
    if (state === record.state) return;
    const from = record.state;
    record.state = state;
    this.counts.move(from, state);
    this.#core.logger.info(
      {
        name: record.name,
        state,
        from,
        attempt: context.attemptSeq,
        ...(context.certificate ? { issuer: context.certificate.issuerId } : {}),
        // The error behind a backoff (or a storage retry), when there is one.
        ...(context.lastError && context.nextAttemptAt !== undefined ? { error: { type: context.lastError.type, message: context.lastError.message } } : {}),
      },
      'certificate state',
    );
    this.#core.publish({ type: 'state_changed', name: record.name, from, to: state, at: this.#core.clock.now() });
  }

  /** Resolves once the name has left `loading` (read from storage, found unreadable, or resumed from sleep), or the engine stops. */
  untilRead(record: NameRecord): Promise<void> {
    if ((record.state !== 'loading' && !record.waking) || this.#core.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const waiting = this.#untilRead.get(record);
      if (waiting) waiting.push(resolve);
      else this.#untilRead.set(record, [resolve]);
    });
  }

  /** The engine stops: nobody waits for a read any more. */
  stop(): void {
    for (const waiting of this.#untilRead.values()) for (const resolve of waiting) resolve();
    this.#untilRead.clear();
  }

  #read(record: NameRecord): void {
    const waiting = this.#untilRead.get(record);
    if (!waiting) return;
    this.#untilRead.delete(record);
    for (const resolve of waiting) resolve();
  }

  /** A name's status: from its actor's context, its sleeping record (`Residency.sleepingOf`), or nothing yet (`loading`). */
  statusOf(record: NameRecord, sleeping: SleepingName | undefined): NameStatus {
    const status: NameStatus = { name: record.name, state: record.state, managed: record.managed, attempts: 0 };
    if (record.names) status.names = [...record.names];
    const context = record.actor?.getSnapshot().context;
    if (context) {
      status.attempts = context.attempts;
      if (context.certificate) status.certificate = context.certificate;
      if (context.renewAt !== undefined) status.renewAt = context.renewAt;
      if (context.lastError) status.lastError = context.lastError;
      // A paused name has no next attempt: only an operator or a fresh allowed handshake resumes it.
      if (context.nextAttemptAt !== undefined && record.state !== 'paused') status.nextAttemptAt = context.nextAttemptAt;
      if (context.failingSince !== undefined) status.failingSince = context.failingSince;
    } else if (sleeping) {
      status.attempts = sleeping.failure?.attempts ?? 0;
      status.certificate = sleeping.certificate;
      status.renewAt = sleeping.renewAt;
      if (sleeping.failure?.lastError) status.lastError = sleeping.failure.lastError;
    }
    return status;
  }
}

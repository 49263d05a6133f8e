/**
 * On-demand admission and eviction: an unknown name at a handshake is added
 * only with permission (`decide` / `ask`), and costs no actor and no storage
 * write when refused; before each attempt for an on-demand name — before its
 * lock — permission is asked again for renewals and retries (a customer may
 * have left) and a new name takes a token of the global issuance budget; a
 * name refused either way is evicted once its waiters were answered.
 */
import { NameNotAllowedError } from '../errors.js';
import type { AttemptInput } from '../machines/certificate.js';
import { keys } from '../storage-keys.js';
import type { EngineCore } from './core.js';
import type { NameRecord } from './name-record.js';
import { createOnDemandGate, OnDemandRefusedError, type OnDemandGate, type OnDemandOptions } from './on-demand.js';
import type { HandshakeInfo } from './options.js';
import type { Residency } from './residency.js';
import { parseStoredCertificate } from './stored.js';

export class OnDemandAdmission {
  readonly #core: EngineCore;
  readonly #residency: Residency;
  readonly #gate: OnDemandGate | undefined;
  /** Names whose permission a handshake has just asked afresh to resume them (their attempt does not ask again). */
  readonly #askedAfresh = new Set<string>();

  constructor(core: EngineCore, residency: Residency, options: OnDemandOptions | undefined) {
    this.#core = core;
    this.#residency = residency;
    this.#gate = options ? createOnDemandGate(options, { now: () => core.clock.now(), logger: core.logger, signal: core.signal }) : undefined;
  }

  /** An unknown name at a handshake: its record once permission is given; `NameNotAllowedError` otherwise. */
  async admit(name: string, servername: string, info: HandshakeInfo): Promise<NameRecord> {
    if (!this.#gate) throw new NameNotAllowedError(name, 'not a managed name and on-demand issuance is off');
    try {
      await this.#gate.check(name, { servername, remoteAddress: info.remoteAddress });
    } catch (error) {
      // A decision outage must not stop serving a certificate that is already stored and valid.
      if (!(error instanceof OnDemandRefusedError && error.reason === 'decision-failed') || !(await this.#hasUsableStored(name))) throw error;
      this.#core.logger.warn({ name }, 'on-demand decision failed; serving the stored certificate');
    }
    return this.#residency.get(name) ?? this.#residency.add(name, false);
  }

  /**
   * Before an attempt for an on-demand name takes any lock: permission again
   * before a renewal and before every retry (asked afresh, not from the cache:
   * a customer may have left while the name kept failing), then a token of
   * the global budget before its first certificate. Returns how to give the
   * token back when no order is placed after all. A name refused here is
   * evicted once the refusal has answered its waiters: it costs no actor.
   */
  async beforeIssue(attempt: AttemptInput): Promise<(() => void) | void> {
    const gate = this.#gate;
    const record = this.#residency.get(attempt.name);
    if (!gate || !record || record.managed) return;
    // A handshake that resumed a paused name has just asked afresh: not twice.
    const retry = !this.#askedAfresh.delete(attempt.name) && (record.actor?.getSnapshot().context.attempts ?? 0) > 0;
    if (attempt.reason !== 'obtain' || retry) {
      if (retry) gate.forget(attempt.name);
      try {
        await gate.check(attempt.name, { servername: attempt.name });
      } catch (error) {
        if (error instanceof OnDemandRefusedError && error.reason === 'denied') this.#evictOnceAnswered(record);
        throw error;
      }
    }
    if (attempt.reason !== 'obtain') return;
    if (!gate.takeIssuanceToken(attempt.name)) {
      // Nobody is owed this name: its waiters get the refusal, then it goes (a later handshake asks again).
      this.#evictOnceAnswered(record);
      throw new OnDemandRefusedError(attempt.name, 'rate-limited', { retryAfter: gate.nextIssuanceTokenAt() });
    }
    return () => gate.returnIssuanceToken();
  }

  /**
   * A handshake for a paused on-demand name: permission asked afresh (not from
   * the cache) before it may resume. A refusal is thrown; a denial also evicts the name.
   */
  async recheck(record: NameRecord, servername: string, info: HandshakeInfo): Promise<void> {
    if (!this.#gate || record.managed) return;
    this.#gate.forget(record.name);
    try {
      await this.#gate.check(record.name, { servername, remoteAddress: info.remoteAddress });
      this.#askedAfresh.add(record.name);
    } catch (error) {
      if (error instanceof OnDemandRefusedError && error.reason === 'denied') {
        this.#residency.remove(record);
        this.#core.logger.info({ name: record.name }, 'paused on-demand name no longer allowed: evicted');
      }
      throw error;
    }
  }

  /** Write pending refusal summaries now (engine stop). */
  flushLog(): void {
    this.#gate?.flushLog();
  }

  /** Drop a refused name once the refusal has answered its waiters (the attempt's end). */
  #evictOnceAnswered(record: NameRecord): void {
    this.#residency.removeAfterAttempt(record, 'on-demand name refused (no longer allowed, or no issuance budget): evicted');
  }

  async #hasUsableStored(name: string): Promise<boolean> {
    try {
      const raw = await this.#core.track(this.#core.storage.load(keys.certificate(name)));
      return raw !== undefined && parseStoredCertificate(keys.certificate(name), raw).meta.notAfter > this.#core.clock.now();
    } catch {
      return false;
    }
  }
}

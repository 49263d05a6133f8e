/**
 * On-demand admission and eviction: an unknown name at a handshake is added
 * only with permission (`decide` / `ask`), and costs no actor and no storage
 * write when refused; before each order for an on-demand name permission is
 * asked again (a customer may have left) and a new name spends a token of the
 * global issuance budget; a name no longer allowed is evicted once its
 * waiters were answered.
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
   * Before an order for an on-demand name: permission again before a renewal,
   * a token from the global budget before its first certificate.
   */
  async beforeIssue(attempt: AttemptInput): Promise<void> {
    const record = this.#residency.get(attempt.name);
    if (!this.#gate || !record || record.managed) return;
    if (attempt.reason === 'obtain') {
      if (!this.#gate.takeIssuanceToken(attempt.name)) {
        throw new OnDemandRefusedError(attempt.name, 'rate-limited', { retryAfter: this.#gate.nextIssuanceTokenAt() });
      }
      return;
    }
    try {
      await this.#gate.check(attempt.name, { servername: attempt.name });
    } catch (error) {
      if (error instanceof OnDemandRefusedError && error.reason === 'denied') this.#evictOnceAnswered(record);
      throw error;
    }
  }

  /** Write pending refusal summaries now (engine stop). */
  flushLog(): void {
    this.#gate?.flushLog();
  }

  /** Drop a name the decision no longer allows once the refusal has answered its waiters (after its next transition). */
  #evictOnceAnswered(record: NameRecord): void {
    const off = this.#core.on('state_changed', (event) => {
      if (event.name !== record.name) return;
      off();
      setImmediate(() => {
        if (this.#core.stopped) return;
        this.#residency.remove(record);
        this.#core.logger.info({ name: record.name }, 'on-demand name no longer allowed: evicted');
      });
    });
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

/**
 * An operator's request for one attempt now (`forceRenew`): an event to the
 * name's actor carrying a reply, answered by the chart with the one outcome
 * of the attempt it starts or joins — its certificate, its error, or
 * "stopped" — and bounded by a timeout after which the operator is told so
 * (the attempt goes on; the reply is dropped from the held ones).
 */
import { CertificateUnavailableError, EngineStoppedError, OperatorTimeoutError } from '../errors.js';
import type { OperatorReply } from '../machines/certificate.js';
import type { CertificateMeta, Clock } from '../types.js';
import type { HeldReplies } from './held-replies.js';
import type { NameRecord } from './name-record.js';
import type { Residency } from './residency.js';

/** Options of `forceRenew`. */
export interface ForceRenewOptions {
  /** Longest wait for the outcome, ms (default: the engine's `operatorTimeout`). The attempt goes on after it. */
  timeoutMs?: number;
}

export interface OperatorDeps {
  clock: Clock;
  held: HeldReplies;
  residency: Residency;
}

/** Send FORCE_RENEW to `record`'s actor (woken at once) and settle with its outcome or `OperatorTimeoutError` after `timeoutMs`. */
export function requestAttempt(deps: OperatorDeps, record: NameRecord, name: string, timeoutMs: number): Promise<CertificateMeta> {
  const { clock } = deps;
  return new Promise<CertificateMeta>((resolve, reject) => {
    let settled = false;
    const reply: OperatorReply = (outcome) => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(timer);
      if (outcome.ok) resolve(outcome.certificate);
      else if ('stopped' in outcome) reject(new EngineStoppedError());
      else reject(new CertificateUnavailableError(name, outcome.error, outcome.nextAttemptAt));
    };
    const timer = clock.setTimeout(() => {
      if (settled) return;
      settled = true;
      deps.held.dropOperator(record, reply);
      reject(new OperatorTimeoutError(name, timeoutMs));
    }, timeoutMs);
    const actor = deps.residency.wake(record, true);
    actor.send({ type: 'FORCE_RENEW', reply });
    // A stopped actor ignores events: answer rather than hang.
    if (actor.getSnapshot().status !== 'active') reply({ ok: false, stopped: true });
  });
}

/**
 * The chart's guards and context updates, as plain functions of the context,
 * the event's data and the machine's clock, randomness and policy: what the
 * chart decides, kept apart from the chart's shape (certificate.ts) so that
 * stays readable. Pure: no I/O, no effect.
 */
import { IssuanceFloorError, isStorageFault, toErrorInfo } from '../errors.js';
import type { CertificateMeta } from '../types.js';
import {
  certificateKind,
  type AttemptInput,
  type AttemptOutput,
  type CertificateContext,
  type CertificateEmitted,
  type LoadedState,
  type MachineDeps,
} from './certificate-io.js';
import { floorUntil, flooredRenewAt, notYetValid, ordersOfLoaded, ordersPlacedBy, recentOrders, withOrders } from './floor.js';
import { failingSinceAfterFailure, failingSinceOf, isPaused } from './pause.js';
import { nextAttemptTime, renewalTime } from './policy.js';

type Update = Partial<CertificateContext>;

/** The decisions of one machine, on its clock, randomness and policy. */
export function chartDecisions({ now, random, policy }: MachineDeps) {
  const kind = (context: CertificateContext) => certificateKind(context, now());
  const storageRetryTime = (at: number) => at + Math.round(policy.storageRetryMs * (0.8 + 0.4 * random()));
  const nonEmpty = (orders: number[]) => (orders.length > 0 ? orders : undefined);
  /** A certificate now in hand: its renewal time drawn, never sooner than the floor after the last order. */
  const adopt = (certificate: CertificateMeta, orders: number[] | undefined): Update => ({
    certificate,
    renewAt: flooredRenewAt(renewalTime(certificate, random(), policy), orders, policy),
    attempts: 0,
    lastError: undefined,
    nextAttemptAt: undefined,
    orders,
    forced: false,
    // A certificate in hand ends the failing streak (pause.ts).
    failingSince: undefined,
  });

  return {
    kind,
    // ─── Guards ───
    /** A certificate is in memory and has not expired. */
    hasUsableCertificate: (context: CertificateContext) => kind(context) === 'usable',
    /** A certificate is in memory (maybe expired). */
    hasCertificate: (context: CertificateContext) => kind(context) !== 'none',
    /** The renewal time has come (none: never). */
    renewalDue: (context: CertificateContext) => now() >= (context.renewAt ?? Infinity),
    /** A backoff has not ended yet (none: none pending). */
    backoffPending: (context: CertificateContext) => now() < (context.nextAttemptAt ?? -Infinity),
    /** The name had `maxOrdersPerWindow` orders within the window: no order now. */
    floorHolds: (context: CertificateContext) => floorUntil(context.orders, now(), policy) !== undefined,
    /**
     * Storage now holds another usable certificate for the name: it is the
     * cluster's current one, whatever its lifetime (adoption is by identity,
     * not by notAfter; fencing keeps storage from going back), unless it is
     * not valid yet (a writer whose clock runs ahead).
     */
    isAnotherUsableCertificate: (context: CertificateContext, incoming: CertificateMeta) =>
      incoming.fingerprint !== context.certificate?.fingerprint && now() < incoming.notAfter && !notYetValid(incoming, now(), policy),
    /** An ARI window: a future time always; "renew now" (a window in the past) once per certificate. */
    acceptsRenewalInfo: (context: CertificateContext, renewAt: number) => renewAt > now() || context.ariNowFor !== context.certificate?.fingerprint,
    /** Failing for longer than `pauseAfterMs` with nothing to serve (pause.ts). */
    paused: (context: CertificateContext) => isPaused(context, now()),

    // ─── Context updates ───
    /** What storage holds: a certificate not valid yet counts as none; without a record, the certificate in hand counts as an order at its notBefore. */
    adoptStored(context: CertificateContext, loaded: LoadedState): Update {
      const at = now();
      const stored = loaded.certificate;
      const certificate = stored && !notYetValid(stored, at, policy) ? stored : undefined;
      const orders = nonEmpty(recentOrders(loaded.failure?.orders ?? ordersOfLoaded(certificate, at, policy), at, policy));
      return {
        certificate,
        renewAt: certificate ? flooredRenewAt(loaded.renewAt ?? renewalTime(certificate, random(), policy), orders, policy) : undefined,
        attempts: loaded.failure?.attempts ?? context.attempts,
        lastError: loaded.failure?.lastError,
        nextAttemptAt: loaded.failure?.nextAttemptAt,
        orders,
        failingSince: failingSinceOf(loaded.failure),
      };
    },
    /** The attempt's certificate; its orders count toward the floor (an adopted one placed none). */
    adoptIssued(context: CertificateContext, { certificate, adopted, ordered }: AttemptOutput): Update {
      return adopt(certificate, withOrders(context.orders, adopted ? 0 : Math.max(1, ordered ?? 1), now(), policy));
    },
    /** Another process's certificate: no order of ours. */
    adoptChanged: (context: CertificateContext, certificate: CertificateMeta): Update => adopt(certificate, withOrders(context.orders, 0, now(), policy)),
    /** An ARI renewal time, never sooner than the floor after the last order; "renew now" remembered for this certificate. */
    setRenewAt: (context: CertificateContext, renewAt: number): Update => {
      const floored = flooredRenewAt(renewAt, context.orders, policy);
      // Only what changes: a window ahead leaves ariNowFor as it is (no key set to undefined).
      return renewAt <= now() ? { renewAt: floored, ariNowFor: context.certificate?.fingerprint } : { renewAt: floored };
    },
    /** A failed attempt: counted, backed off (never sooner than the floor lets an order be placed); its orders counted. */
    recordFailure(context: CertificateContext, cause: unknown): Update {
      const at = now();
      const error = toErrorInfo(cause, at);
      const orders = withOrders(context.orders, ordersPlacedBy(cause), at, policy);
      // Our storage being unreachable, or our lock taken over by another process, is not the
      // CA's verdict: retry in about 5 s (jittered), without counting an attempt or growing the CA backoff.
      if (isStorageFault(error.code)) return { lastError: error, nextAttemptAt: storageRetryTime(at), orders, forced: false };
      // The cluster's floor (another process's orders): wait for it, not a failure of the CA.
      if (error.code === 'ERR_ISSUANCE_FLOOR' && error.retryAfter !== undefined) return { lastError: error, nextAttemptAt: error.retryAfter, orders, forced: false };
      const attempts = context.attempts + 1;
      const backoff = nextAttemptTime(at, attempts, random(), error.retryAfter, policy);
      return {
        attempts,
        lastError: error,
        nextAttemptAt: Math.max(backoff, floorUntil(orders, at, policy) ?? backoff),
        orders,
        forced: false,
        failingSince: failingSinceAfterFailure(context, at),
      };
    },
    /** Storage could not be read: read again in about 5 s (jittered). Never an attempt, never counted, never persisted. */
    recordStorageFailure: (cause: unknown): Update => {
      const at = now();
      return { lastError: toErrorInfo(cause, at), nextAttemptAt: storageRetryTime(at), forced: false };
    },
    /** The floor holds: no attempt before it lets one (not a failure: nothing counted). */
    recordFloor(context: CertificateContext): Update {
      const at = now();
      const until = floorUntil(context.orders, at, policy) ?? at;
      const recent = recentOrders(context.orders, at, policy);
      return { lastError: toErrorInfo(new IssuanceFloorError(context.name, recent.length, policy.orderWindowMs, until), at), nextAttemptAt: until, orders: nonEmpty(recent) };
    },
    /** The attempt's input: what it replaces, the CA holds in force, the orders so far, whether an operator asked. */
    attemptInput(context: CertificateContext): AttemptInput {
      const orders = recentOrders(context.orders, now(), policy);
      return {
        name: context.name,
        current: context.certificate,
        reason: attemptReason(kind(context)),
        ...(context.lastError?.issuerRetryAfter ? { issuerRetryAfter: context.lastError.issuerRetryAfter } : {}),
        ...(orders.length > 0 ? { orders } : {}),
        ...(context.forced ? { forced: true } : {}),
      };
    },
    /** `cert_obtaining`, saying when an operator's request bypasses the issuance floor. */
    obtaining(context: CertificateContext): Extract<CertificateEmitted, { type: 'cert_obtaining' }> {
      return {
        type: 'cert_obtaining',
        name: context.name,
        reason: attemptReason(kind(context)),
        attempt: context.attemptSeq + 1,
        forced: context.forced,
        floorBypassed: context.forced && floorUntil(context.orders, now(), policy) !== undefined,
      };
    },
  };
}

/** Why an attempt runs, by the certificate in hand. */
export function attemptReason(kind: 'none' | 'usable' | 'expired'): AttemptInput['reason'] {
  return kind === 'none' ? 'obtain' : kind === 'usable' ? 'renew' : 'expired';
}

/** The decisions of one machine (`chartDecisions`). */
export type ChartDecisions = ReturnType<typeof chartDecisions>;

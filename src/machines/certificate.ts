/**
 * The lifecycle statechart of one name's certificate.
 *
 * Pure: it decides *what* happens (which state, who gets answered, when the
 * next attempt may start) and names every effect; the engine provides the
 * effects (loading, the issuance attempt, persisting failures, holding and
 * releasing waiting handshakes) with `machine.provide()`.
 *
 * The guarantee the project exists for lives in the shape of this chart:
 * - one `attempting` state owns the single in-flight attempt (`invoke`);
 *   `obtaining`, `renewing` and `expired-renewing` are its children, so
 *   moving between them (a certificate expiring mid-renewal) never restarts it;
 * - a handshake is an event; in states with nothing to serve it is *held*,
 *   and held handshakes are released only on entry to `valid` or
 *   `failed-backoff`, i.e. by the transition that ends the attempt, with
 *   that state's answer; releasing never sends an event back, so nothing
 *   can recurse or start a second attempt;
 * - the only ways into `attempting` are start-up routing, the renewal timer,
 *   the backoff timer and an operator's FORCE_RENEW — never a handshake.
 */
import { and, assign, emit, enqueueActions, fromPromise, not, setup } from 'xstate';
import { isStorageFault, toErrorInfo } from '../errors.js';
import type { CertificateMeta, ErrorInfo } from '../types.js';
import { defaultTimingPolicy, nextAttemptTime, renewalTime, type TimingPolicy } from './policy.js';

// ─── Context, events, actor I/O ────────────────────────────────────────────

/** Context: metadata only. Keys and PEMs never enter it (the inspector shows context). */
export interface CertificateContext {
  /** The (normalised) name this actor manages. */
  name: string;
  /** The certificate in use, if any (may be expired). */
  certificate?: CertificateMeta;
  /** When renewal is due, ms since epoch. */
  renewAt?: number;
  /** Consecutive failed attempts (reset by success). */
  attempts: number;
  /** The last attempt's error. */
  lastError?: ErrorInfo;
  /** No attempt before this time, ms since epoch (backoff). */
  nextAttemptAt?: number;
  /** Attempts started by this actor, for logs. */
  attemptSeq: number;
  /** Serve an expired certificate during backoff instead of failing the handshake. */
  serveExpired: boolean;
  /** Storage has been read at least once: until then, a retry re-reads instead of ordering. */
  loaded: boolean;
}

/** What a handshake is answered with. */
export type HandshakeAnswer =
  | { ok: true; fingerprint: string; expired: boolean }
  | { ok: false; error: ErrorInfo; nextAttemptAt?: number }
  | { ok: false; stopped: true };

/** The reply callback a handshake event carries; called exactly once. */
export type HandshakeReply = (answer: HandshakeAnswer) => void;

/** Failure record persisted beside the certificate, so a restart keeps the backoff. */
export interface FailureRecord {
  attempts: number;
  lastError?: ErrorInfo;
  nextAttemptAt?: number;
}

/** Output of the `loadStored` actor. */
export interface LoadedState {
  certificate?: CertificateMeta;
  failure?: FailureRecord;
  /** The renewal time already drawn for `certificate` (a name woken from dormancy keeps its jitter). */
  renewAt?: number;
}

/** Input of the `attempt` actor. */
export interface AttemptInput {
  name: string;
  /** The certificate being replaced, if any (for `replaces` and the re-read after locking). */
  current?: CertificateMeta;
  /** Why this attempt runs. */
  reason: 'obtain' | 'renew' | 'expired';
  /** Issuers whose CA's Retry-After (from the last failure) has not passed: issuer id → ms since epoch. */
  issuerRetryAfter?: Record<string, number>;
}

/** Output of the `attempt` actor: the certificate now in storage (issued, or found fresh after locking). */
export interface AttemptOutput {
  certificate: CertificateMeta;
  /** True when another process had already stored a fresh certificate: nothing was issued. */
  adopted: boolean;
}

export type CertificateEvent =
  | { type: 'HANDSHAKE'; reply: HandshakeReply }
  | { type: 'FORCE_RENEW' }
  | { type: 'STORAGE_CHANGED'; certificate: CertificateMeta }
  | { type: 'RENEWAL_INFO'; renewAt: number }
  | { type: 'STOP' };

/** Notifications the machine emits (engine.on(...) re-publishes them). */
export type CertificateEmitted =
  | { type: 'cert_obtaining'; name: string; reason: AttemptInput['reason']; attempt: number }
  | { type: 'cert_obtained'; name: string; certificate: CertificateMeta; adopted: boolean }
  | { type: 'cert_renewed'; name: string; certificate: CertificateMeta; previous: CertificateMeta; adopted: boolean }
  | { type: 'cert_failed'; name: string; error: ErrorInfo; attempts: number; nextAttemptAt: number }
  | { type: 'cert_expired'; name: string; certificate: CertificateMeta };

/** Input when creating a per-name actor. */
export interface CertificateInput {
  name: string;
  serveExpired?: boolean;
}

/** What the machine needs from the outside world to *decide* (not to act). */
export interface MachineDeps {
  /** The engine clock's `now()`. */
  now(): number;
  /** Uniform [0, 1) for jitter. */
  random(): number;
  /** Renewal and backoff tunables. */
  policy: TimingPolicy;
}

const notProvided = (what: string) => () => {
  throw new Error(`certificate machine: ${what} was not provided (use machine.provide)`);
};

/** Build the lifecycle machine with the given clock, randomness and policy. Effects must be provided. */
export function createCertificateMachine(deps: MachineDeps = { now: Date.now, random: Math.random, policy: defaultTimingPolicy }) {
  const { now, random, policy } = deps;
  const usable = (c: CertificateContext) => c.certificate !== undefined && now() < c.certificate.notAfter;
  const untilMs = (at: number | undefined) => (at === undefined ? 0 : Math.max(0, at - now()));

  return setup({
    types: {
      context: {} as CertificateContext,
      events: {} as CertificateEvent,
      input: {} as CertificateInput,
      emitted: {} as CertificateEmitted,
    },
    actors: {
      /** Read the stored certificate unit and failure record (engine-provided). */
      loadStored: fromPromise<LoadedState, { name: string }>(notProvided('loadStored')),
      /** One issuance attempt: lock, re-read, issue, store (engine-provided). */
      attempt: fromPromise<AttemptOutput, AttemptInput>(notProvided('attempt')),
      /** Persist the failure record (engine-provided; its errors are logged, not fatal). */
      persistFailure: fromPromise<void, { name: string; record: FailureRecord }>(notProvided('persistFailure')),
    },
    actions: {
      /** Keep a handshake until the attempt in flight ends (engine-provided: it also arms the handshake deadline). */
      holdHandshake: notProvided('holdHandshake'),
      /** Answer every held handshake with this answer (engine-provided). */
      releaseHandshakes: (_, _answer: HandshakeAnswer) => notProvided('releaseHandshakes')(),
      replyWithCertificate: ({ context, event }) => {
        if (event.type !== 'HANDSHAKE' || !context.certificate) return;
        event.reply({ ok: true, fingerprint: context.certificate.fingerprint, expired: !usable(context) });
      },
      replyWithError: ({ context, event }) => {
        if (event.type !== 'HANDSHAKE') return;
        event.reply(errorAnswer(context));
      },
      adoptStored: assign(({ context, event }) => {
        const loaded = (event as unknown as { output: LoadedState }).output;
        const cert = loaded.certificate;
        return {
          certificate: cert,
          renewAt: cert ? (loaded.renewAt ?? renewalTime(cert, random(), policy)) : undefined,
          loaded: true,
          attempts: loaded.failure?.attempts ?? context.attempts,
          lastError: loaded.failure?.lastError,
          nextAttemptAt: loaded.failure?.nextAttemptAt,
        };
      }),
      countAttempt: assign({ attemptSeq: ({ context }) => context.attemptSeq + 1 }),
      adoptIssued: assign(({ event }) => {
        const { certificate } = (event as unknown as { output: AttemptOutput }).output;
        return {
          certificate,
          renewAt: renewalTime(certificate, random(), policy),
          attempts: 0,
          lastError: undefined,
          nextAttemptAt: undefined,
        };
      }),
      adoptChanged: assign(({ event }) => {
        const { certificate } = event as Extract<CertificateEvent, { type: 'STORAGE_CHANGED' }>;
        return { certificate, renewAt: renewalTime(certificate, random(), policy), attempts: 0, lastError: undefined, nextAttemptAt: undefined };
      }),
      setRenewAt: assign({ renewAt: ({ event }) => (event as Extract<CertificateEvent, { type: 'RENEWAL_INFO' }>).renewAt }),
      recordFailure: assign(({ context, event }) => {
        const at = now();
        const error = toErrorInfo((event as unknown as { error: unknown }).error, at);
        // Our storage being unreachable, or our lock taken over, is not the CA's verdict:
        // retry in about 5 s (jittered), without counting an attempt or growing the CA backoff.
        if (isStorageFault(error.code)) {
          return { lastError: error, nextAttemptAt: at + Math.round(policy.storageRetryMs * (0.8 + 0.4 * random())) };
        }
        const attempts = context.attempts + 1;
        return { attempts, lastError: error, nextAttemptAt: nextAttemptTime(at, attempts, random(), error.retryAfter, policy) };
      }),
      clearBackoff: assign({ nextAttemptAt: undefined }),
      emitObtaining: emit(({ context }) => ({
        type: 'cert_obtaining' as const,
        name: context.name,
        reason: attemptReason(context, usable(context)),
        attempt: context.attemptSeq,
      })),
      emitIssued: emit(({ context, event }) => {
        const { certificate, adopted } = (event as unknown as { output: AttemptOutput }).output;
        return context.certificate
          ? { type: 'cert_renewed' as const, name: context.name, certificate, previous: context.certificate, adopted }
          : { type: 'cert_obtained' as const, name: context.name, certificate, adopted };
      }),
      emitFailed: emit(({ context }) => ({
        type: 'cert_failed' as const,
        name: context.name,
        error: context.lastError!,
        attempts: context.attempts,
        nextAttemptAt: context.nextAttemptAt ?? now(),
      })),
      emitExpired: emit(({ context }) => ({ type: 'cert_expired' as const, name: context.name, certificate: context.certificate! })),
    },
    guards: {
      /** A certificate is in memory and has not expired. */
      hasUsableCertificate: ({ context }) => usable(context),
      /** Storage has not been read successfully yet. */
      notLoaded: ({ context }) => !context.loaded,
      /** A certificate is in memory (maybe expired). */
      hasCertificate: ({ context }) => context.certificate !== undefined,
      /** A certificate can be served during backoff: unexpired, or expired and the user opted in. */
      canServeInBackoff: ({ context }) => context.certificate !== undefined && (usable(context) || context.serveExpired),
      renewalDue: ({ context }) => context.renewAt !== undefined && now() >= context.renewAt,
      backoffPending: ({ context }) => context.nextAttemptAt !== undefined && now() < context.nextAttemptAt,
      /**
       * Storage now holds another usable certificate for the name: it is the
       * cluster's current one, whatever its lifetime (a renewal in the same
       * second, or to a shorter profile, is adopted too). Adoption is by
       * identity, not by notAfter: the event carries what storage holds now.
       */
      isNewerCertificate: ({ context, event }) => {
        if (event.type !== 'STORAGE_CHANGED') return false;
        const incoming = event.certificate;
        return incoming.fingerprint !== context.certificate?.fingerprint && now() < incoming.notAfter;
      },
    },
    delays: {
      untilRenewal: ({ context }) => untilMs(context.renewAt),
      untilExpiry: ({ context }) => untilMs(context.certificate?.notAfter),
      untilNextAttempt: ({ context }) => untilMs(context.nextAttemptAt),
    },
  }).createMachine({
    id: 'certificate',
    context: ({ input }) => ({ name: input.name, attempts: 0, attemptSeq: 0, serveExpired: input.serveExpired ?? false, loaded: false }),
    initial: 'loading',
    on: { STOP: '.stopped' },
    states: {
      loading: {
        invoke: {
          id: 'load',
          src: 'loadStored',
          input: ({ context }) => ({ name: context.name }),
          onDone: { target: 'routing', actions: 'adoptStored' },
          onError: { target: 'failed-backoff', actions: ['recordFailure', 'emitFailed'] },
        },
        on: { HANDSHAKE: { actions: 'holdHandshake' } },
      },
      /** Decide where to go from what is known; transient. */
      routing: {
        always: [
          { guard: and(['hasUsableCertificate', not('renewalDue')]), target: 'valid' },
          { guard: 'backoffPending', target: 'failed-backoff' },
          { guard: 'hasUsableCertificate', target: 'attempting.renewing' },
          { guard: 'hasCertificate', target: 'attempting.expired-renewing' },
          { target: 'attempting.obtaining' },
        ],
      },
      attempting: {
        initial: 'obtaining',
        entry: ['countAttempt', 'emitObtaining'],
        invoke: {
          id: 'attempt',
          src: 'attempt',
          input: ({ context }) => ({
            name: context.name,
            current: context.certificate,
            reason: attemptReason(context, usable(context)),
            ...(context.lastError?.issuerRetryAfter ? { issuerRetryAfter: context.lastError.issuerRetryAfter } : {}),
          }),
          onDone: { target: 'valid', actions: ['emitIssued', 'adoptIssued'] },
          onError: { target: 'failed-backoff', actions: ['recordFailure', 'emitFailed'] },
        },
        states: {
          obtaining: {
            on: { HANDSHAKE: { actions: 'holdHandshake' } },
          },
          renewing: {
            // Handshakes held while loading get the still-valid certificate now, not after the renewal.
            entry: enqueueActions(({ context, enqueue }) => {
              enqueue({ type: 'releaseHandshakes', params: { ok: true, fingerprint: context.certificate!.fingerprint, expired: false } });
            }),
            on: { HANDSHAKE: { actions: 'replyWithCertificate' } },
            after: { untilExpiry: { target: 'expired-renewing', actions: 'emitExpired' } },
          },
          'expired-renewing': {
            on: { HANDSHAKE: { actions: 'holdHandshake' } },
          },
        },
      },
      valid: {
        entry: enqueueActions(({ context, enqueue }) => {
          enqueue({ type: 'releaseHandshakes', params: { ok: true, fingerprint: context.certificate!.fingerprint, expired: false } });
        }),
        after: {
          untilRenewal: { target: 'attempting.renewing' },
          untilExpiry: { target: 'routing', actions: 'emitExpired' },
        },
        on: {
          HANDSHAKE: { actions: 'replyWithCertificate' },
          FORCE_RENEW: { target: 'attempting.renewing' },
          RENEWAL_INFO: { target: 'valid', reenter: true, actions: 'setRenewAt' },
          STORAGE_CHANGED: { guard: 'isNewerCertificate', target: 'valid', reenter: true, actions: 'adoptChanged' },
        },
      },
      'failed-backoff': {
        entry: enqueueActions(({ context, enqueue, check }) => {
          enqueue({
            type: 'releaseHandshakes',
            params: check('canServeInBackoff')
              ? { ok: true, fingerprint: context.certificate!.fingerprint, expired: !usable(context) }
              : errorAnswer(context),
          });
        }),
        invoke: {
          id: 'persistFailure',
          src: 'persistFailure',
          input: ({ context }) => ({
            name: context.name,
            record: { attempts: context.attempts, lastError: context.lastError, nextAttemptAt: context.nextAttemptAt },
          }),
        },
        // A failed *load* is retried by loading again: an unread storage is never a reason to order.
        after: { untilNextAttempt: [{ guard: 'notLoaded', target: 'loading' }, { target: 'routing' }] },
        on: {
          HANDSHAKE: [{ guard: 'canServeInBackoff', actions: 'replyWithCertificate' }, { actions: 'replyWithError' }],
          // An operator's retry: an attempt now, whatever the backoff or the renewal time.
          FORCE_RENEW: [
            { guard: 'notLoaded', target: 'loading', actions: 'clearBackoff' },
            { guard: 'hasUsableCertificate', target: 'attempting.renewing', actions: 'clearBackoff' },
            { guard: 'hasCertificate', target: 'attempting.expired-renewing', actions: 'clearBackoff' },
            { target: 'attempting.obtaining', actions: 'clearBackoff' },
          ],
          STORAGE_CHANGED: { guard: 'isNewerCertificate', target: 'valid', actions: 'adoptChanged' },
        },
      },
      stopped: {
        type: 'final',
        entry: { type: 'releaseHandshakes', params: { ok: false, stopped: true } },
      },
    },
  });
}

function attemptReason(context: CertificateContext, isUsable: boolean): AttemptInput['reason'] {
  if (!context.certificate) return 'obtain';
  return isUsable ? 'renew' : 'expired';
}

/** The answer of a state with nothing to serve: the recorded error and when the next attempt may start. */
export function errorAnswer(context: CertificateContext): HandshakeAnswer {
  return {
    ok: false,
    error: context.lastError ?? { type: 'CertificateUnavailableError', message: 'no certificate', at: 0 },
    nextAttemptAt: context.nextAttemptAt,
  };
}

/** The machine type, for typing provided implementations. */
export type CertificateMachine = ReturnType<typeof createCertificateMachine>;

/** The lifecycle machine with the real clock: for diagrams, the inspector and graph traversal. */
export const certificateMachine = createCertificateMachine();

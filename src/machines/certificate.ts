/**
 * The lifecycle statechart of one name's certificate: the one decision table
 * of certstate.
 *
 * Pure: it decides *what* happens (which state, what a handshake or an
 * operator gets, when the next attempt may start) and names every effect; the
 * engine provides the effects (loading, the issuance attempt, persisting
 * failures, holding and releasing replies) with `machine.provide()`, and reads
 * the chart's decisions back from snapshots (`hasTag`) — never recomputes them.
 *
 * The guarantee the project exists for lives in the shape of this chart:
 * - one `attempting` state owns the single in-flight attempt (`invoke`);
 *   `obtaining`, `renewing` and `expired-renewing` are its children, so
 *   moving between them (a certificate expiring mid-renewal) never restarts it;
 * - a handshake is an event; in states tagged `holds` it is *held*, and held
 *   replies are released only on entry to the state that ends what they wait
 *   for, with that state's answer; releasing never sends an event back, so
 *   nothing can recurse or start a second attempt;
 * - the only ways into `attempting` are routing (nothing usable stored, the
 *   renewal time, the end of a backoff) and an operator's FORCE_RENEW —
 *   never a handshake.
 *
 * What a handshake gets is said by exactly one tag per resting state:
 * `serves-certificate` (at once, the certificate), `serves-expired-certificate`
 * (at once, an expired certificate the user opted in to: `serveExpired`),
 * `refuses` (at once, the recorded error) or `holds` (the outcome of what is
 * in flight). `may-sleep` marks the resting state a name may leave its actor
 * in (the engine keeps it as a small record and wakes it at the chart's next timer).
 */
import { and, assign, emit, fromPromise, not, setup } from 'xstate';
import { isStorageOutage, toErrorInfo } from '../errors.js';
import type { CertificateMeta, ErrorInfo, LifecycleState } from '../types.js';
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
  /** The last attempt's (or storage read's) error. */
  lastError?: ErrorInfo;
  /** No attempt (in `storage-unreadable`: no read) before this time, ms since epoch. */
  nextAttemptAt?: number;
  /** Attempts started by this actor, for logs. */
  attemptSeq: number;
  /** Serve an expired certificate during backoff instead of failing the handshake. */
  serveExpired: boolean;
  /** An operator asked for an attempt before storage was read: routing starts one, whatever the renewal time or backoff. */
  forced: boolean;
}

/** What a handshake is answered with. */
export type HandshakeAnswer =
  | { ok: true; fingerprint: string; expired: boolean }
  | { ok: false; error: ErrorInfo; nextAttemptAt?: number }
  | { ok: false; stopped: true };

/** An answer a state gives at once (never `stopped`: only the final state gives that). */
export type ImmediateAnswer = Exclude<HandshakeAnswer, { stopped: true }>;

/** The reply callback a handshake event carries; called exactly once. */
export type HandshakeReply = (answer: HandshakeAnswer) => void;

/** What an operator's FORCE_RENEW is answered with: the outcome of the attempt it asked for. */
export type OperatorOutcome =
  | { ok: true; certificate: CertificateMeta }
  | { ok: false; error: ErrorInfo; nextAttemptAt?: number }
  | { ok: false; stopped: true };

/** The reply callback a FORCE_RENEW event may carry; called at most once. */
export type OperatorReply = (outcome: OperatorOutcome) => void;

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
  /** The renewal time already drawn for `certificate` (a name woken from sleep keeps its jitter). */
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
  | { type: 'FORCE_RENEW'; reply?: OperatorReply }
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

/**
 * The tags by which the chart says what a handshake gets in a resting state
 * (exactly one per state that can be at rest, except `stopped`), and
 * `may-sleep` for the state a name may rest in without an actor.
 */
export const TAGS = {
  servesCertificate: 'serves-certificate',
  servesExpiredCertificate: 'serves-expired-certificate',
  refuses: 'refuses',
  holds: 'holds',
  maySleep: 'may-sleep',
} as const;

/** The answer tags: one of them marks every resting state but `stopped`. */
export const ANSWER_TAGS = [TAGS.servesCertificate, TAGS.servesExpiredCertificate, TAGS.refuses, TAGS.holds] as const;

const notProvided = (what: string) => () => {
  throw new Error(`certificate machine: ${what} was not provided (use machine.provide)`);
};

/** Build the lifecycle machine with the given clock, randomness and policy. Effects must be provided. */
export function createCertificateMachine(deps: MachineDeps = { now: Date.now, random: Math.random, policy: defaultTimingPolicy }) {
  const { now, random, policy } = deps;
  const kind = (context: CertificateContext) => certificateKind(context, now());
  const untilMs = (at: number | undefined) => (at === undefined ? 0 : Math.max(0, at - now()));
  const certificateAnswer = (context: CertificateContext): HandshakeAnswer => ({
    ok: true,
    fingerprint: context.certificate!.fingerprint,
    expired: kind(context) === 'expired',
  });

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
      /** Keep a handshake until the state that ends what it waits for (engine-provided: it also arms the handshake deadline). */
      holdHandshake: (_, _params: { reply: HandshakeReply }) => notProvided('holdHandshake')(),
      /** Keep an operator's reply until the outcome of the attempt it asked for (engine-provided). */
      holdOperator: (_, _params: { reply?: OperatorReply }) => notProvided('holdOperator')(),
      /** Answer every held handshake with this answer (engine-provided). */
      releaseHandshakes: (_, _answer: HandshakeAnswer) => notProvided('releaseHandshakes')(),
      /** Answer every held operator with this outcome (engine-provided). */
      releaseOperators: (_, _outcome: OperatorOutcome) => notProvided('releaseOperators')(),
      /** Answer one handshake now. */
      answerHandshake: (_, { reply, answer }: { reply: HandshakeReply; answer: HandshakeAnswer }) => reply(answer),
      adoptStored: assign(({ context }, loaded: LoadedState) => {
        const cert = loaded.certificate;
        return {
          certificate: cert,
          renewAt: cert ? (loaded.renewAt ?? renewalTime(cert, random(), policy)) : undefined,
          attempts: loaded.failure?.attempts ?? context.attempts,
          lastError: loaded.failure?.lastError,
          nextAttemptAt: loaded.failure?.nextAttemptAt,
        };
      }),
      /** An attempt starts: count it, consume an operator's request, and drop the backoff it overrides or outlived. */
      startAttempt: assign({ attemptSeq: ({ context }) => context.attemptSeq + 1, forced: false, nextAttemptAt: undefined }),
      markForced: assign({ forced: true }),
      adoptIssued: assign((_, { certificate }: AttemptOutput) => ({
        certificate,
        renewAt: renewalTime(certificate, random(), policy),
        attempts: 0,
        lastError: undefined,
        nextAttemptAt: undefined,
      })),
      adoptChanged: assign((_, certificate: CertificateMeta) => ({
        certificate,
        renewAt: renewalTime(certificate, random(), policy),
        attempts: 0,
        lastError: undefined,
        nextAttemptAt: undefined,
      })),
      setRenewAt: assign((_, renewAt: number) => ({ renewAt })),
      recordFailure: assign(({ context }, { error: cause }: { error: unknown }) => {
        const at = now();
        const error = toErrorInfo(cause, at);
        // Our storage being unreachable is not the CA's verdict: retry in about
        // 5 s (jittered), without counting an attempt or growing the CA backoff.
        if (isStorageOutage(error.code)) return { lastError: error, nextAttemptAt: storageRetryTime(at) };
        const attempts = context.attempts + 1;
        return { attempts, lastError: error, nextAttemptAt: nextAttemptTime(at, attempts, random(), error.retryAfter, policy) };
      }),
      /** Storage could not be read: read again in about 5 s (jittered). Never an attempt, never counted, never persisted. */
      recordStorageFailure: assign((_, { error: cause }: { error: unknown }) => {
        const at = now();
        return { lastError: toErrorInfo(cause, at), nextAttemptAt: storageRetryTime(at), forced: false };
      }),
      emitObtaining: emit(({ context }) => ({
        type: 'cert_obtaining' as const,
        name: context.name,
        reason: attemptReason(kind(context)),
        attempt: context.attemptSeq,
      })),
      emitIssued: emit(({ context }, { certificate, adopted }: AttemptOutput) =>
        context.certificate
          ? { type: 'cert_renewed' as const, name: context.name, certificate, previous: context.certificate, adopted }
          : { type: 'cert_obtained' as const, name: context.name, certificate, adopted },
      ),
      emitFailed: emit(({ context }) => ({
        type: 'cert_failed' as const,
        name: context.name,
        error: refusalOf(context).error,
        attempts: context.attempts,
        nextAttemptAt: context.nextAttemptAt ?? now(),
      })),
      emitExpired: emit(({ context }) => ({ type: 'cert_expired' as const, name: context.name, certificate: context.certificate! })),
    },
    guards: {
      /** A certificate is in memory and has not expired. */
      hasUsableCertificate: ({ context }) => kind(context) === 'usable',
      /** A certificate is in memory (maybe expired). */
      hasCertificate: ({ context }) => kind(context) !== 'none',
      /** The user opted in to serving an expired certificate during backoff. */
      servesExpired: ({ context }) => context.serveExpired,
      /** An operator asked for an attempt while storage was being read. */
      forced: ({ context }) => context.forced,
      renewalDue: ({ context }) => context.renewAt !== undefined && now() >= context.renewAt,
      backoffPending: ({ context }) => context.nextAttemptAt !== undefined && now() < context.nextAttemptAt,
      /** Another process stored a certificate that outlives ours and is still valid. */
      isNewerCertificate: ({ context }, incoming: CertificateMeta) =>
        incoming.fingerprint !== context.certificate?.fingerprint && incoming.notAfter > (context.certificate?.notAfter ?? -Infinity) && now() < incoming.notAfter,
    },
    delays: {
      untilRenewal: ({ context }) => untilMs(context.renewAt),
      untilExpiry: ({ context }) => untilMs(context.certificate?.notAfter),
      untilNextAttempt: ({ context }) => untilMs(context.nextAttemptAt),
    },
  }).createMachine({
    id: 'certificate',
    context: ({ input }) => ({ name: input.name, attempts: 0, attemptSeq: 0, serveExpired: input.serveExpired ?? false, forced: false }),
    initial: 'loading',
    on: { STOP: '.stopped' },
    states: {
      /** Reading the stored certificate and failure record. */
      loading: {
        tags: [TAGS.holds],
        invoke: {
          id: 'load',
          src: 'loadStored',
          input: ({ context }) => ({ name: context.name }),
          onDone: { target: 'routing', actions: { type: 'adoptStored', params: ({ event }) => event.output } },
          onError: { target: 'storage-unreadable', actions: { type: 'recordStorageFailure', params: ({ event }) => ({ error: event.error }) } },
        },
        on: {
          HANDSHAKE: { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } },
          // The operator's attempt starts once storage is read (routing reads the flag).
          FORCE_RENEW: { actions: [{ type: 'holdOperator', params: ({ event }) => ({ reply: event.reply }) }, 'markForced'] },
        },
      },
      /** Decide where to go from what is known; transient. */
      routing: {
        always: [
          { guard: 'forced', target: 'attempting' },
          { guard: and(['hasUsableCertificate', not('renewalDue')]), target: 'valid' },
          { guard: 'backoffPending', target: 'failed-backoff' },
          { target: 'attempting' },
        ],
      },
      /** One issuance attempt in flight; its children say what a handshake gets meanwhile. */
      attempting: {
        entry: ['startAttempt', 'emitObtaining'],
        invoke: {
          id: 'attempt',
          src: 'attempt',
          input: ({ context }) => ({
            name: context.name,
            current: context.certificate,
            reason: attemptReason(kind(context)),
            ...(context.lastError?.issuerRetryAfter ? { issuerRetryAfter: context.lastError.issuerRetryAfter } : {}),
          }),
          onDone: {
            target: 'valid',
            actions: [
              { type: 'emitIssued', params: ({ event }) => event.output },
              { type: 'adoptIssued', params: ({ event }) => event.output },
            ],
          },
          onError: { target: 'failed-backoff', actions: [{ type: 'recordFailure', params: ({ event }) => ({ error: event.error }) }, 'emitFailed'] },
        },
        // An operator joins the attempt in flight: one attempt, one outcome.
        on: { FORCE_RENEW: { actions: { type: 'holdOperator', params: ({ event }) => ({ reply: event.reply }) } } },
        initial: 'choosing',
        states: {
          /** Which kind of attempt, by the certificate in hand; transient. */
          choosing: {
            always: [
              { guard: 'hasUsableCertificate', target: 'renewing' },
              { guard: 'hasCertificate', target: 'expired-renewing' },
              { target: 'obtaining' },
            ],
          },
          obtaining: {
            tags: [TAGS.holds],
            on: { HANDSHAKE: { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } } },
          },
          renewing: {
            tags: [TAGS.servesCertificate],
            // Handshakes held while loading get the still-valid certificate now, not after the renewal.
            entry: { type: 'releaseHandshakes', params: ({ context }) => certificateAnswer(context) },
            on: {
              HANDSHAKE: [
                { guard: 'hasUsableCertificate', actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: certificateAnswer(context) }) } },
                // Expired a moment before the expiry timer fired: held until that timer moves the state on.
                { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } },
              ],
            },
            after: { untilExpiry: { target: 'expired-renewing', actions: 'emitExpired' } },
          },
          'expired-renewing': {
            tags: [TAGS.holds],
            on: { HANDSHAKE: { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } } },
          },
        },
      },
      /** A usable certificate, renewal not yet due. */
      valid: {
        tags: [TAGS.servesCertificate, TAGS.maySleep],
        entry: [
          { type: 'releaseHandshakes', params: ({ context }) => certificateAnswer(context) },
          { type: 'releaseOperators', params: ({ context }) => ({ ok: true, certificate: context.certificate! }) },
        ],
        // Through routing, so a backoff recorded meanwhile (by another process) still holds at the renewal time.
        after: {
          untilRenewal: { target: 'routing' },
          untilExpiry: { target: 'routing', actions: 'emitExpired' },
        },
        on: {
          HANDSHAKE: [
            { guard: 'hasUsableCertificate', actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: certificateAnswer(context) }) } },
            // Expired a moment before the expiry timer fired: held until that timer moves the state on.
            { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } },
          ],
          FORCE_RENEW: { target: 'attempting', actions: { type: 'holdOperator', params: ({ event }) => ({ reply: event.reply }) } },
          RENEWAL_INFO: { target: 'valid', reenter: true, actions: { type: 'setRenewAt', params: ({ event }) => event.renewAt } },
          STORAGE_CHANGED: {
            guard: { type: 'isNewerCertificate', params: ({ event }) => event.certificate },
            target: 'valid',
            reenter: true,
            actions: { type: 'adoptChanged', params: ({ event }) => event.certificate },
          },
        },
      },
      /** The last attempt failed: no attempt before `nextAttemptAt` (the CA's verdict, persisted). */
      'failed-backoff': {
        entry: { type: 'releaseOperators', params: ({ context }) => refusalOf(context) },
        invoke: {
          id: 'persistFailure',
          src: 'persistFailure',
          input: ({ context }) => ({
            name: context.name,
            record: { attempts: context.attempts, lastError: context.lastError, nextAttemptAt: context.nextAttemptAt },
          }),
        },
        after: { untilNextAttempt: { target: 'routing' } },
        on: {
          // An operator's retry: an attempt now, whatever the backoff or the renewal time.
          FORCE_RENEW: { target: 'attempting', actions: { type: 'holdOperator', params: ({ event }) => ({ reply: event.reply }) } },
          STORAGE_CHANGED: {
            guard: { type: 'isNewerCertificate', params: ({ event }) => event.certificate },
            target: 'valid',
            actions: { type: 'adoptChanged', params: ({ event }) => event.certificate },
          },
        },
        initial: 'choosing',
        states: {
          /** Serve or refuse, by the certificate in hand; transient. */
          choosing: {
            always: [
              { guard: 'hasUsableCertificate', target: 'serving' },
              { guard: and(['hasCertificate', 'servesExpired']), target: 'serving-expired' },
              { target: 'refusing' },
            ],
          },
          /** A still-valid certificate, served until it expires. */
          serving: {
            tags: [TAGS.servesCertificate],
            entry: { type: 'releaseHandshakes', params: ({ context }) => certificateAnswer(context) },
            on: {
              HANDSHAKE: [
                { guard: 'hasUsableCertificate', actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: certificateAnswer(context) }) } },
                // Expired a moment before the expiry timer fired: held until that timer moves the state on.
                { actions: { type: 'holdHandshake', params: ({ event }) => ({ reply: event.reply }) } },
              ],
            },
            after: {
              untilExpiry: [
                { guard: 'servesExpired', target: 'serving-expired', actions: 'emitExpired' },
                { target: 'refusing', actions: 'emitExpired' },
              ],
            },
          },
          /** An expired certificate, served because the user opted in (`serveExpired`). */
          'serving-expired': {
            tags: [TAGS.servesExpiredCertificate],
            entry: { type: 'releaseHandshakes', params: ({ context }) => certificateAnswer(context) },
            on: { HANDSHAKE: { actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: certificateAnswer(context) }) } } },
          },
          /** Nothing to serve: the recorded error, at once. */
          refusing: {
            tags: [TAGS.refuses],
            entry: { type: 'releaseHandshakes', params: ({ context }) => refusalOf(context) },
            on: { HANDSHAKE: { actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: refusalOf(context) }) } } },
          },
        },
      },
      /** Our storage could not be read (not the CA's verdict): refuse, and read again after `nextAttemptAt`. */
      'storage-unreadable': {
        tags: [TAGS.refuses],
        entry: [
          { type: 'releaseHandshakes', params: ({ context }) => refusalOf(context) },
          { type: 'releaseOperators', params: ({ context }) => refusalOf(context) },
        ],
        after: { untilNextAttempt: { target: 'loading' } },
        on: {
          HANDSHAKE: { actions: { type: 'answerHandshake', params: ({ context, event }) => ({ reply: event.reply, answer: refusalOf(context) }) } },
          // Read again now, then start the attempt the operator asked for.
          FORCE_RENEW: { target: 'loading', actions: [{ type: 'holdOperator', params: ({ event }) => ({ reply: event.reply }) }, 'markForced'] },
        },
      },
      stopped: {
        type: 'final',
        entry: [
          { type: 'releaseHandshakes', params: { ok: false, stopped: true } },
          { type: 'releaseOperators', params: { ok: false, stopped: true } },
        ],
      },
    },
  });

  function storageRetryTime(at: number): number {
    return at + Math.round(policy.storageRetryMs * (0.8 + 0.4 * random()));
  }
}

/** What the certificate in hand is worth at `now`. */
export function certificateKind(context: Pick<CertificateContext, 'certificate'>, now: number): 'none' | 'usable' | 'expired' {
  if (context.certificate === undefined) return 'none';
  return now < context.certificate.notAfter ? 'usable' : 'expired';
}

function attemptReason(kind: 'none' | 'usable' | 'expired'): AttemptInput['reason'] {
  return kind === 'none' ? 'obtain' : kind === 'usable' ? 'renew' : 'expired';
}

/** The answer of a state that refuses: the recorded error, and when the next attempt (or read) may start. */
export function refusalOf(context: Pick<CertificateContext, 'lastError' | 'nextAttemptAt'>): { ok: false; error: ErrorInfo; nextAttemptAt?: number } {
  return {
    ok: false,
    error: context.lastError ?? { type: 'CertificateUnavailableError', message: 'no certificate', at: 0 },
    nextAttemptAt: context.nextAttemptAt,
  };
}

/**
 * The lifecycle state shown to users for a snapshot value (`snapshot.value`):
 * the top-level state's name, except inside `attempting`, which is shown as
 * the kind of attempt in flight (`obtaining`, `renewing`, `expired-renewing`).
 * The substates of `failed-backoff` (serving, refusing) show as `failed-backoff`.
 */
export function lifecycleStateOf(value: unknown): LifecycleState {
  if (typeof value === 'string') return value as LifecycleState;
  const [top, child] = Object.entries(value as Record<string, unknown>)[0] ?? ['loading'];
  return (top === 'attempting' ? child : top) as LifecycleState;
}

/** The machine type, for typing provided implementations. */
export type CertificateMachine = ReturnType<typeof createCertificateMachine>;

/** The lifecycle machine with the real clock: for diagrams, the inspector and graph traversal. */
export const certificateMachine = createCertificateMachine();

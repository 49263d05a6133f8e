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
import type { CertificateMeta } from '../types.js';
import {
  refusalOf,
  TAGS,
  type AttemptInput,
  type AttemptOutput,
  type CertificateContext,
  type CertificateEmitted,
  type CertificateEvent,
  type CertificateInput,
  type FailureRecord,
  type HandshakeAnswer,
  type HandshakeReply,
  type LoadedState,
  type MachineDeps,
  type OperatorOutcome,
  type OperatorReply,
} from './certificate-io.js';
import { chartDecisions } from './decisions.js';
import { defaultTimingPolicy } from './policy.js';

// The chart's vocabulary (context, events, answers, effect I/O, tags) lives in certificate-io.ts.
export * from './certificate-io.js';

const notProvided = (what: string) => () => {
  throw new Error(`certificate machine: ${what} was not provided (use machine.provide)`);
};

/** Build the lifecycle machine with the given clock, randomness and policy. Effects must be provided. */
export function createCertificateMachine(deps: MachineDeps = { now: Date.now, random: Math.random, policy: defaultTimingPolicy }) {
  const { now } = deps;
  const decide = chartDecisions(deps);
  const kind = decide.kind;
  const untilMs = (at: number | undefined) => Math.max(0, (at ?? now()) - now());
  const certificateAnswer = (context: CertificateContext): HandshakeAnswer => ({
    ok: true,
    fingerprint: context.certificate!.fingerprint,
    expired: kind(context) === 'expired',
  });
  // Params of the reply actions, from the event that carries the reply.
  type WithReply<R> = { context: CertificateContext; event: { reply: R } };
  const replyOf = ({ event }: WithReply<HandshakeReply>) => ({ reply: event.reply });
  const operatorOf = ({ event }: { event: { reply?: OperatorReply } }) => ({ reply: event.reply });
  const withCertificate = ({ context, event }: WithReply<HandshakeReply>) => ({ reply: event.reply, answer: certificateAnswer(context) });
  const withRefusal = ({ context, event }: WithReply<HandshakeReply>) => ({ reply: event.reply, answer: refusalOf(context) });
  /** A handshake in a state that serves its certificate: answered at once while it is usable, held a moment after its expiry, until the expiry timer moves the state on. */
  const serveOrHold = [
    { guard: 'hasUsableCertificate' as const, actions: { type: 'answerHandshake' as const, params: withCertificate } },
    { actions: { type: 'holdHandshake' as const, params: replyOf } },
  ];

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
      adoptStored: assign(({ context }, loaded: LoadedState) => decide.adoptStored(context, loaded)),
      /** An attempt starts: count it, and drop the backoff it overrides or outlived (an operator's request is consumed at its end). */
      startAttempt: assign({ attemptSeq: ({ context }) => context.attemptSeq + 1, nextAttemptAt: undefined }),
      markForced: assign({ forced: true }),
      adoptIssued: assign(({ context }, output: AttemptOutput) => decide.adoptIssued(context, output)),
      adoptChanged: assign(({ context }, certificate: CertificateMeta) => decide.adoptChanged(context, certificate)),
      setRenewAt: assign(({ context }, renewAt: number) => decide.setRenewAt(context, renewAt)),
      recordFailure: assign(({ context }, { error }: { error: unknown }) => decide.recordFailure(context, error)),
      recordStorageFailure: assign((_, { error }: { error: unknown }) => decide.recordStorageFailure(error)),
      recordFloor: assign(({ context }) => decide.recordFloor(context)),
      emitObtaining: emit(({ context }) => decide.obtaining(context)),
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
      hasUsableCertificate: ({ context }) => decide.hasUsableCertificate(context),
      /** A certificate is in memory (maybe expired). */
      hasCertificate: ({ context }) => decide.hasCertificate(context),
      /** The user opted in to serving an expired certificate during backoff. */
      servesExpired: ({ context }) => context.serveExpired,
      /** An operator asked for an attempt (it bypasses backoff and the issuance floor). */
      forced: ({ context }) => context.forced,
      renewalDue: ({ context }) => decide.renewalDue(context),
      backoffPending: ({ context }) => decide.backoffPending(context),
      /** The issuance floor holds: `maxOrdersPerWindow` orders within `orderWindowMs`. */
      floorHolds: ({ context }) => decide.floorHolds(context),
      /** Storage now holds another usable certificate (valid already) for the name: the cluster's current one. */
      isAnotherUsableCertificate: ({ context }, incoming: CertificateMeta) => decide.isAnotherUsableCertificate(context, incoming),
      /** A future ARI window always; "renew now" once per certificate. */
      acceptsRenewalInfo: ({ context }, renewAt: number) => decide.acceptsRenewalInfo(context, renewAt),
      /** Failing for longer than `pauseAfterMs` with nothing to serve (pause.ts). */
      paused: ({ context }) => decide.paused(context),
    },
    delays: {
      untilRenewal: ({ context }) => untilMs(context.renewAt),
      // Armed only in states that hold a certificate (renewing, valid, serving).
      untilExpiry: ({ context }) => untilMs(context.certificate!.notAfter),
      untilNextAttempt: ({ context }) => untilMs(context.nextAttemptAt),
    },
  }).createMachine({
    id: 'certificate',
    context: ({ input }) => ({ name: input.name, attempts: 0, attemptSeq: 0, serveExpired: input.serveExpired ?? false, forced: false, pauseAfterMs: input.pauseAfterMs }),
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
          HANDSHAKE: { actions: { type: 'holdHandshake', params: replyOf } },
          // The operator's attempt starts once storage is read (routing reads the flag).
          FORCE_RENEW: { actions: [{ type: 'holdOperator', params: operatorOf }, 'markForced'] },
        },
      },
      /** Decide where to go from what is known; transient. */
      routing: {
        always: [
          { guard: 'forced', target: 'attempting' },
          { guard: and(['hasUsableCertificate', not('renewalDue')]), target: 'valid' },
          { guard: 'paused', target: 'paused' },
          { guard: 'backoffPending', target: 'failed-backoff' },
          // Never hammer a CA: at most maxOrdersPerWindow orders per name per window, whatever the reason.
          { guard: 'floorHolds', target: 'failed-backoff', actions: 'recordFloor' },
          { target: 'attempting' },
        ],
      },
      /** One issuance attempt in flight; its children say what a handshake gets meanwhile. */
      attempting: {
        entry: ['emitObtaining', 'startAttempt'],
        invoke: {
          id: 'attempt',
          src: 'attempt',
          input: ({ context }) => decide.attemptInput(context),
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
        on: { FORCE_RENEW: { actions: { type: 'holdOperator', params: operatorOf } } },
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
            on: { HANDSHAKE: { actions: { type: 'holdHandshake', params: replyOf } } },
          },
          renewing: {
            tags: [TAGS.servesCertificate],
            // Handshakes held while loading get the still-valid certificate now, not after the renewal.
            entry: { type: 'releaseHandshakes', params: ({ context }) => certificateAnswer(context) },
            on: {
              HANDSHAKE: serveOrHold,
            },
            after: { untilExpiry: { target: 'expired-renewing', actions: 'emitExpired' } },
          },
          'expired-renewing': {
            tags: [TAGS.holds],
            on: { HANDSHAKE: { actions: { type: 'holdHandshake', params: replyOf } } },
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
          HANDSHAKE: serveOrHold,
          FORCE_RENEW: { target: 'attempting', actions: [{ type: 'holdOperator', params: operatorOf }, 'markForced'] },
          RENEWAL_INFO: {
            guard: { type: 'acceptsRenewalInfo', params: ({ event }) => event.renewAt },
            target: 'valid',
            reenter: true,
            actions: { type: 'setRenewAt', params: ({ event }) => event.renewAt },
          },
          STORAGE_CHANGED: {
            guard: { type: 'isAnotherUsableCertificate', params: ({ event }) => event.certificate },
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
            record: {
              attempts: context.attempts,
              lastError: context.lastError,
              nextAttemptAt: context.nextAttemptAt,
              ...(context.orders ? { orders: context.orders } : {}),
              ...(context.failingSince !== undefined ? { failingSince: context.failingSince } : {}),
            },
          }),
        },
        after: { untilNextAttempt: { target: 'routing' } },
        on: {
          // An operator's retry: an attempt now, whatever the backoff, the floor or the renewal time.
          FORCE_RENEW: { target: 'attempting', actions: [{ type: 'holdOperator', params: operatorOf }, 'markForced'] },
          STORAGE_CHANGED: {
            guard: { type: 'isAnotherUsableCertificate', params: ({ event }) => event.certificate },
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
              HANDSHAKE: serveOrHold,
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
            on: { HANDSHAKE: { actions: { type: 'answerHandshake', params: withCertificate } } },
          },
          /** Nothing to serve: the recorded error, at once. */
          refusing: {
            tags: [TAGS.refuses],
            entry: { type: 'releaseHandshakes', params: ({ context }) => refusalOf(context) },
            on: { HANDSHAKE: { actions: { type: 'answerHandshake', params: withRefusal } } },
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
          HANDSHAKE: { actions: { type: 'answerHandshake', params: withRefusal } },
          // Read again now, then start the attempt the operator asked for.
          FORCE_RENEW: { target: 'loading', actions: [{ type: 'holdOperator', params: operatorOf }, 'markForced'] },
        },
      },
      /** Failing for days with nothing to serve: no order until an operator's FORCE_RENEW or a RESUME gives it one attempt. */
      paused: {
        tags: [TAGS.resumes],
        entry: { type: 'releaseHandshakes', params: ({ context }) => refusalOf(context) },
        on: {
          HANDSHAKE: { actions: { type: 'answerHandshake', params: withRefusal } },
          RESUME: { target: 'attempting', actions: { type: 'holdHandshake', params: replyOf } },
          // Like every FORCE_RENEW: the operator's attempt bypasses the issuance floor (said in cert_obtaining).
          FORCE_RENEW: { target: 'attempting', actions: [{ type: 'holdOperator', params: operatorOf }, 'markForced'] },
          STORAGE_CHANGED: {
            guard: { type: 'isAnotherUsableCertificate', params: ({ event }) => event.certificate },
            target: 'valid',
            actions: { type: 'adoptChanged', params: ({ event }) => event.certificate },
          },
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
}

/** The machine type, for typing provided implementations. */
export type CertificateMachine = ReturnType<typeof createCertificateMachine>;

/** The lifecycle machine with the real clock: for diagrams, the inspector and graph traversal. */
export const certificateMachine = createCertificateMachine();

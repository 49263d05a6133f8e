/**
 * The effects the chart names, bound to this engine's storage, issuers and
 * held replies: provided once per engine with `machine.provide()` (not per
 * name: providing rebuilds the state-node tree, far too costly at 100k
 * names). Per-name effects find their record through `context.name`.
 */
import { fromPromise } from 'xstate';
import { AttemptTimeoutError, isStorageFault } from '../errors.js';
import { withOrdersPlaced } from '../machines/floor.js';
import {
  createCertificateMachine,
  type AttemptInput,
  type AttemptOutput,
  type CertificateMachine,
  type FailureRecord,
  type HandshakeAnswer,
  type HandshakeReply,
  type LoadedState,
  type OperatorOutcome,
  type OperatorReply,
} from '../machines/certificate.js';
import { safeError } from '../safe-error.js';
import { keys } from '../storage-keys.js';
import { runAttempt, type AttemptProgress } from './attempt.js';
import type { EngineCore } from './core.js';
import type { HeldReplies } from './held-replies.js';
import { Limiter } from './limiter.js';
import type { Loads } from './loads.js';
import type { MaterialCache } from './material-cache.js';
import type { NameRecord } from './name-record.js';
import { serializeFailureRecord } from './stored.js';

/** Attempts doing storage and CA work at once: a mass first start must not open a file or an order per name at once. */
export const MAX_ATTEMPTS = 32;
/** Slots new on-demand names can never take: renewals and managed names always find one. */
export const RESERVED_ATTEMPTS = 8;

export interface EffectDeps {
  core: EngineCore;
  materials: MaterialCache;
  loads: Loads;
  held: HeldReplies;
  /** The record of a name, if the engine still holds it. */
  record(name: string): NameRecord | undefined;
  /** The names of the certificate stored under a name: all of a group's, else the name alone. */
  namesOf(name: string): readonly string[];
  /** Called before an attempt takes its lock: may throw to refuse (on-demand permission and budget); returns how to give an unspent token back. */
  beforeIssue(attempt: AttemptInput): Promise<(() => void) | void>;
}

/** The lifecycle machine with this engine's clock, randomness and policy, and its effects. */
export function provideEffects(deps: EffectDeps): CertificateMachine {
  const { core, held, record } = deps;
  const attempts = new Limiter(MAX_ATTEMPTS);
  const machine = createCertificateMachine({ now: () => core.clock.now(), random: core.random, policy: core.policy });
  return machine.provide({
    actors: {
      loadStored: fromPromise<LoadedState, { name: string }>(({ input }) => {
        const nameRecord = record(input.name);
        return nameRecord ? deps.loads.load(nameRecord) : Promise.resolve({});
      }),
      attempt: fromPromise<AttemptOutput, AttemptInput>(({ input, signal }) => {
        // A new on-demand name (no certificate, not managed) may not take the reserved slots.
        const newOnDemand = input.reason === 'obtain' && record(input.name)?.managed === false;
        return core.track(
          attempts.run(() => withDeadline(core, input.name, signal, (attemptSignal, progress) => runAttempt(attemptDeps(deps, input.name), input, attemptSignal, progress)), {
            // A queued attempt whose actor stopped (engine stop, eviction) never starts.
            signal,
            limit: newOnDemand ? MAX_ATTEMPTS - RESERVED_ATTEMPTS : MAX_ATTEMPTS,
          }),
        );
      }),
      persistFailure: fromPromise<void, { name: string; record: FailureRecord }>(async ({ input }) => {
        // Our own refusals (permission, budget) are not the CA's verdict: keep them off disk, so a flood costs no writes.
        if (input.record.lastError?.code === 'ERR_NAME_NOT_ALLOWED') return;
        // Nor our storage being down: the write would fail, or outlive the outage as a cluster-wide backoff.
        if (isStorageFault(input.record.lastError?.code)) return;
        return core.track(
          core.storageClock
            .offset()
            .then((offset) => core.storage.store(keys.failure(input.name), serializeFailureRecord(input.record, offset)))
            .catch((error: unknown) => {
              core.logger.warn({ name: input.name, err: safeError(error) }, 'could not persist the failure record');
            }),
        );
      }),
    },
    actions: {
      holdHandshake: ({ context }, { reply }: { reply: HandshakeReply }) => held.holdHandshake(record(context.name), reply),
      holdOperator: ({ context }, { reply }: { reply?: OperatorReply }) => held.holdOperator(record(context.name), reply),
      releaseHandshakes: ({ context }, answer: HandshakeAnswer) => held.releaseHandshakes(record(context.name), answer),
      releaseOperators: ({ context }, outcome: OperatorOutcome) => held.releaseOperators(record(context.name), outcome),
    },
  });
}

/** What an attempt needs, from this engine's parts. */
function attemptDeps(deps: EffectDeps, name: string) {
  const { core } = deps;
  return {
    names: deps.namesOf(name),
    storage: core.storage,
    issuers: core.issuers,
    clock: core.clock,
    logger: core.logger,
    materials: deps.materials,
    policy: core.policy,
    lockTtlMs: core.settings.lockTtlMs,
    storageClock: core.storageClock,
    pending: core.pending,
    corrupt: core.corrupt,
    beforeIssue: (attempt: AttemptInput) => deps.beforeIssue(attempt),
    onIssuerResult: (r: { name: string; issuer: string; ok: boolean; error?: unknown; durationMs: number }) =>
      core.publish({
        type: 'issuer_attempt',
        name: r.name,
        issuer: r.issuer,
        result: r.ok ? 'success' : 'failure',
        durationMs: r.durationMs,
        ...(r.ok ? {} : { errorType: r.error instanceof Error ? r.error.name : 'Error' }),
      }),
  };
}

/**
 * Run an attempt under `attemptTimeout` (engine clock): past it, or when the
 * actor stops, the attempt's signal aborts and this settles at once with the
 * reason (`AttemptTimeoutError`), freeing the slot even if an issuer ignores
 * the signal. The attempt itself checks the signal before storing anything,
 * so a late result is discarded; it is still tracked, so `stop()` waits for it.
 */
function withDeadline<T>(core: EngineCore, name: string, actorSignal: AbortSignal, run: (signal: AbortSignal, progress: AttemptProgress) => Promise<T>): Promise<T> {
  const timeoutMs = core.settings.attemptTimeout;
  const deadline = new AbortController();
  const signal = AbortSignal.any([actorSignal, deadline.signal]);
  const timer = core.clock.setTimeout(() => deadline.abort(new AttemptTimeoutError(name, timeoutMs)), timeoutMs);
  const progress: AttemptProgress = { ordered: 0 };
  const attempt = core.track(run(signal, progress));
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    // The orders it placed before it was given up on still count toward the floor.
    onAbort = () => reject(withOrdersPlaced(signal.reason, progress.ordered));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});
  attempt.catch(() => {}); // its outcome after an abort is the abort's
  return Promise.race([attempt, aborted]).finally(() => {
    core.clock.clearTimeout(timer);
    signal.removeEventListener('abort', onAbort!);
  });
}

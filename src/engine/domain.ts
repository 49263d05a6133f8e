/**
 * What the engine keeps per name: its actor (or, asleep, its record), its
 * held handshakes, and the answers memoised from its latest state.
 */
import type { Actor, Subscription } from 'xstate';
import type { CertificateMachine, HandshakeAnswer, HandshakeReply, LoadedState, OperatorReply } from '../machines/certificate.js';
import type { CertificateMeta, LifecycleState, TimerHandle } from '../types.js';

export type CertActor = Actor<CertificateMachine>;

/** A sleeping name: its `valid` certificate and renewal time, with no actor running. */
export type Dormant = LoadedState & { certificate: CertificateMeta; renewAt: number };

export interface Domain {
  readonly name: string;
  readonly managed: boolean;
  /** The running statechart; undefined while the name sleeps (`dormant`) or has not been read yet. */
  actor: CertActor | undefined;
  subscription: Subscription | undefined;
  /** Set while the name sleeps. */
  dormant: Dormant | undefined;
  /** What a storage read already found, handed to the actor's first load (so it reads nothing). */
  preloaded: LoadedState | undefined;
  /** The actor was woken by a handshake or an operator: its load goes ahead of background reads. */
  urgent: boolean;
  /** Woken from sleep: its reload of the known record is not shown as a state change. */
  waking: boolean;
  /** A read of the certificate's key material in flight (after cache eviction). */
  reloading: Promise<void> | undefined;
  /**
   * Held handshakes and their deadlines (ms since epoch). Every waiter gets
   * the same `handshakeTimeout`, so insertion order is deadline order and one
   * timer per name (`deadlineTimer`, armed for the oldest) serves them all.
   * Created with the first waiter: most names never have one (~300 B saved per name).
   */
  waiters: Map<HandshakeReply, number> | undefined;
  /** Operators waiting for the outcome of the attempt they asked for. */
  operators: Set<OperatorReply> | undefined;
  deadlineTimer: TimerHandle | undefined;
  state: LifecycleState | undefined;
  /** The certificate in use (metadata only). */
  certificate: CertificateMeta | undefined;
  fingerprint: string | undefined;
  /** Next ARI (renewal information) check, if the certificate's issuer offers ARI. */
  ariTimer?: TimerHandle;
  /**
   * The answer of `valid` and `renewing` ("this certificate, at once"),
   * memoised from the latest snapshot so a handshake costs a Map lookup, not
   * an XState macrostep. Unset in every other state: those handshakes are events.
   */
  ready: { fingerprint: string; notAfter: number; expired: boolean } | undefined;
  /**
   * The answer of `failed-backoff` with nothing to serve, memoised the same
   * way: a flood of handshakes during backoff costs no XState event each.
   */
  refusal: HandshakeAnswer | undefined;
}

/** A name's record, with no actor yet. */
export function newDomain(name: string, managed: boolean): Domain {
  return {
    name,
    managed,
    actor: undefined,
    subscription: undefined,
    dormant: undefined,
    preloaded: undefined,
    urgent: false,
    waking: false,
    reloading: undefined,
    waiters: undefined,
    operators: undefined,
    deadlineTimer: undefined,
    state: undefined,
    certificate: undefined,
    fingerprint: undefined,
    ready: undefined,
    refusal: undefined,
  };
}

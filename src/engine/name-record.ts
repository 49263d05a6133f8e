/**
 * What the engine keeps per name. Each group of fields is written by one
 * part of the engine only (named in its comment); the others read it.
 */
import type { Actor } from 'xstate';
import type { CertificateMachine, HandshakeReply, ImmediateAnswer, LoadedState, OperatorReply } from '../machines/certificate.js';
import type { CertificateMeta, LifecycleState, TimerHandle } from '../types.js';

export type CertActor = Actor<CertificateMachine>;

/** A read the start-up scan already made for a name's actor: what it found, or why it failed. */
export type Preloaded = LoadedState | { readonly readError: unknown };

/** A sleeping name: what its actor resumes from (its `valid` certificate and renewal time, no storage read). */
export type SleepingName = LoadedState & { certificate: CertificateMeta; renewAt: number };

/**
 * What a sleeping name's record holds itself: its failure record when it
 * has one (rare), else the shared `RESTED`. Its certificate is the record's
 * `certificate`, its renewal time in residency's per-slot column
 * (`Residency.sleepingOf` puts the `SleepingName` together): no object and
 * no boxed number per sleeping name.
 */
export type Asleep = Readonly<Pick<SleepingName, 'failure'>>;

/** The sleeping facts of a name with no failure record: one object shared by all of them. */
export const RESTED: Asleep = Object.freeze({});

/**
 * Replies held for a name (held replies): handshakes with their deadlines,
 * and operators waiting for the outcome of the attempt they asked for.
 * Every handshake gets the same `handshakeTimeout`, so insertion order is
 * deadline order and one timer per name, armed for the oldest, serves them all.
 */
export interface Held {
  handshakes: Map<HandshakeReply, number> | undefined;
  deadlineTimer: TimerHandle | undefined;
  operators: Set<OperatorReply> | undefined;
}

export interface NameRecord {
  readonly name: string;
  /** Residency: the order in which the engine came to know the name (status pages' cursor). */
  readonly seq: number;
  /** Residency: the name's index in the engine's per-name arrays (the wake heap's), reused after the name is removed. */
  readonly slot: number;
  /** Configured (`names`, `manage()`), or admitted on demand. */
  readonly managed: boolean;
  /**
   * Every name of the certificate when it has several (`names: [['example.com',
   * '*.example.com']]`), `name` first; undefined for a certificate of one name.
   * The attempt orders them all; a stored certificate must cover them all.
   */
  readonly names: readonly string[] | undefined;

  /** Residency: the running statechart; undefined while the name sleeps or has not been read yet. */
  actor: CertActor | undefined;
  /** Residency: set while the name sleeps (see `Asleep`). */
  sleeping: Asleep | undefined;
  /** Residency: what a storage read already found (or why it failed), handed to the actor's first load (so it reads nothing). */
  preloaded: Preloaded | undefined;
  /** Residency: the actor was woken by a handshake or an operator, so its load goes ahead of background reads. */
  urgent: boolean;

  /** Loads: a read of the certificate's key material in flight (after cache eviction). */
  reloading: Promise<void> | undefined;

  /** Held replies: created with the first one (most names never hold any: ~300 B saved per name). */
  held: Held | undefined;

  /** State view: the lifecycle state shown (a name not read yet is `loading`). */
  state: LifecycleState;
  /** State view: the certificate in use (metadata only). */
  certificate: CertificateMeta | undefined;
  /**
   * State view: the answer the chart gives a handshake at once in the
   * current state (tags `serves-certificate`, `serves-expired-certificate`,
   * `refuses`), so a handshake costs a Map lookup, not an XState event.
   * Undefined while the chart holds handshakes.
   */
  answer: ImmediateAnswer | undefined;
  /** State view: woken from sleep, so its reload of the known record is not shown as a state change. */
  waking: boolean;
}

/** The names a record's certificate is for. */
export function certificateNames(record: NameRecord): readonly string[] {
  return record.names ?? [record.name];
}

/** Whether a name held by `record` belongs to a certificate other than `group` (`manage()` refuses it). */
export function belongsElsewhere(record: NameRecord | undefined, group: readonly string[]): boolean {
  return record !== undefined && (record.name !== group[0] || certificateNames(record).join() !== group.join());
}

/** A name's record, with no actor yet (`names`: the certificate's names when it has several, `name` first). */
export function newNameRecord(name: string, managed: boolean, seq: number, slot: number, names?: readonly string[]): NameRecord {
  return {
    name,
    seq,
    slot,
    managed,
    names: names && names.length > 1 ? names : undefined,
    actor: undefined,
    sleeping: undefined,
    preloaded: undefined,
    urgent: false,
    reloading: undefined,
    held: undefined,
    state: 'loading',
    certificate: undefined,
    answer: undefined,
    waking: false,
  };
}

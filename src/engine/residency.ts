/**
 * Residency: which names the engine holds, and how — not read yet (a record),
 * live (a running statechart actor), or sleeping (a small record, no actor).
 *
 * Per-name actors are independent roots, not children of one parent (XState
 * stops N children in O(N²)). Beyond `maxLiveActors`, names resting where the
 * chart says they may sleep (tag `may-sleep`) are kept as records, least
 * recently active first; a sleeping name is served exactly like a live one.
 * It wakes — its actor starts from the record, no storage read — when the
 * chart's next timer for it would fire (one heap, `WakeQueue`, for every
 * sleeping name), or when something needs its actor (a handshake it cannot
 * answer at once, an operator). Events that reach a sleeping name (another
 * process's certificate, an ARI window) are put to the chart's questions, so
 * it stays asleep when the chart lets it.
 */
import { createActor, type InspectionEvent, type Observer } from 'xstate';
import { TAGS, type CertificateEvent, type CertificateMachine } from '../machines/certificate.js';
import type { CertificateSnapshot, ChartQuestions } from '../machines/questions.js';
import { isIpLiteral } from '../names.js';
import type { NameStatus } from '../types.js';
import { safeError } from '../safe-error.js';
import type { EngineCore } from './core.js';
import type { CertEngineEvent } from './events.js';
import type { HeldReplies } from './held-replies.js';
import { newNameRecord, RESTED, type CertActor, type NameRecord, type Preloaded, type SleepingName } from './name-record.js';
import type { StateView } from './state-view.js';
import { isUnverified } from './stored-meta.js';
import type { WakeQueue } from './wake-queue.js';

export interface ResidencyDeps {
  core: EngineCore;
  /** The engine's machine, effects provided. */
  machine: CertificateMachine;
  questions: ChartQuestions;
  view: StateView;
  held: HeldReplies;
  queue: WakeQueue<'wake' | 'ari'>;
  inspect: Observer<InspectionEvent> | ((event: InspectionEvent) => void) | undefined;
  /** On-demand names pause after failing this long with nothing to serve (undefined: on-demand is off). */
  pauseAfterMs: number | undefined;
}

export class Residency {
  readonly #deps: ResidencyDeps;
  readonly #records = new Map<string, NameRecord>();
  /** The other names of certificates with several (`names: [['example.com', '*.example.com']]`) → their record, keyed by the first. */
  readonly #aliases = new Map<string, NameRecord>();
  /** Live actors resting where they may sleep, least recently active first: the candidates for sleep. */
  readonly #resting = new Map<string, NameRecord>();
  /** Names to drop once their attempt ends, with why (logged). */
  readonly #evicting = new Map<string, string>();
  #live = 0;
  /** The next record's `seq`. */
  #seq = 0;
  /** Records by slot (`NameRecord.slot`: the wake heap's index); undefined where a removed name's slot waits for reuse. */
  readonly #bySlot: Array<NameRecord | undefined> = [];
  /** Slots of removed names, reused first (churning on-demand names do not grow the per-slot arrays). */
  readonly #freeSlots: number[] = [];
  /** Sleeping names' renewal times by slot (one Float64Array, not a boxed number per name). */
  #renewAt = new Float64Array(64);
  #sleepPending = false;

  constructor(deps: ResidencyDeps) {
    this.#deps = deps;
  }

  /** The record of a name, or of the certificate it is one of several names of (O(1), no I/O). */
  get(name: string): NameRecord | undefined {
    return this.#records.get(name) ?? (this.#aliases.size === 0 ? undefined : this.#aliases.get(name));
  }

  /** The record holding `slot` now (the wake heap's handlers get slots), if any. */
  bySlot(slot: number): NameRecord | undefined {
    return this.#bySlot[slot];
  }

  /**
   * A name's record, without an actor yet (the scan, a handshake or an
   * operator wakes it). `names`: every name of its certificate when it has
   * several, `name` first; the others become aliases of this record.
   */
  add(name: string, managed: boolean, names?: readonly string[]): NameRecord {
    let record = this.#records.get(name);
    if (!record) {
      const slot = this.#freeSlots.pop() ?? this.#newSlot();
      this.#records.set(name, (record = newNameRecord(name, managed, this.#seq++, slot, names)));
      this.#bySlot[slot] = record;
      for (const alias of record.names?.slice(1) ?? []) this.#aliases.set(alias, record);
      this.#deps.view.counts.add(record.state);
    }
    return record;
  }

  /**
   * What a sleeping name's actor resumes from (its certificate, renewal time
   * and failure record, if any), put together from the record and the slot's
   * renewal time; undefined when the name does not sleep.
   */
  sleepingOf(record: NameRecord): SleepingName | undefined {
    const sleeping = record.sleeping;
    if (!sleeping || !record.certificate) return undefined;
    const renewAt = this.#renewAt[record.slot]!;
    return sleeping.failure ? { certificate: record.certificate, renewAt, failure: sleeping.failure } : { certificate: record.certificate, renewAt };
  }

  /** A name's status, from its actor, its sleeping record or nothing yet (the state view's). */
  statusOf(record: NameRecord): NameStatus {
    return this.#deps.view.statusOf(record, this.sleepingOf(record));
  }

  /** Whether `name` is the key of a managed record (managed records are never removed: the cleaner's and `manage()`'s question). */
  holdsManaged(name: string): boolean {
    const record = this.#records.get(name);
    return record !== undefined && record.managed;
  }

  records(): IterableIterator<NameRecord> {
    return this.#records.values();
  }

  get size(): number {
    return this.#records.size;
  }

  get liveActors(): number {
    return this.#live;
  }

  get sleeping(): number {
    return this.#deps.queue.size('wake');
  }

  /** Whether one more live actor fits under `maxLiveActors`. */
  get roomForActor(): boolean {
    return this.#live < this.#deps.core.settings.maxLiveActors;
  }

  /**
   * The managed wildcard covering `name`, if any (a name of its own, or one
   * of a group's names): `*.example.com` covers `a.example.com` (exactly one
   * label, RFC 6125 §6.4.3), never `example.com` or `a.b.example.com`. An
   * exact managed or on-demand name wins over it.
   */
  managedWildcardFor(name: string): NameRecord | undefined {
    const dot = name.indexOf('.');
    if (dot <= 0 || isIpLiteral(name)) return undefined;
    const wildcard = this.get(`*${name.slice(dot)}`);
    return wildcard?.managed ? wildcard : undefined;
  }

  /**
   * The name's running actor, created if the name sleeps or was never read.
   * A sleeping name's actor starts from its record (no storage read).
   * `urgent`: its load goes ahead of background reads (a handshake or an operator waits).
   */
  wake(record: NameRecord, urgent = false): CertActor {
    if (record.actor) return record.actor;
    const { core, machine, view, queue, inspect } = this.#deps;
    if (record.sleeping) {
      record.preloaded ??= this.sleepingOf(record);
      record.sleeping = undefined;
      record.waking = true;
      queue.cancel('wake', record.slot);
    }
    record.urgent = urgent;
    const actor = createActor(machine, {
      id: `cert:${record.name}`,
      input: { name: record.name, serveExpired: core.settings.serveExpired, pauseAfterMs: record.managed ? undefined : this.#deps.pauseAfterMs },
      clock: core.clock,
      inspect,
    });
    record.actor = actor;
    this.#live++;
    actor.on('*', (event) => {
      if (event.type === 'cert_obtaining' && event.floorBypassed) {
        core.logger.warn({ name: record.name, attempt: event.attempt }, 'operator forceRenew bypasses the issuance floor: ordering although the name had its maximum orders in the window');
      }
      core.publish(event as CertEngineEvent);
    });
    actor.subscribe({
      next: (snapshot) => {
        // An actor put to sleep or evicted is no longer this name's.
        if (record.actor !== actor) return;
        this.#noteRest(record, snapshot);
        view.show(record, snapshot);
        if (this.#evicting.size > 0 && !snapshot.matches('attempting')) this.#evictRefused(record);
      },
      error: (error) => core.logger.error({ name: record.name, err: safeError(error) }, 'certificate actor failed'),
    });
    actor.start();
    return actor;
  }

  /**
   * A name read from storage (the start-up scan): live when there is room
   * for its actor or the chart says it cannot rest, else asleep. What was
   * read (or why it failed) is handed to the actor as its first load, unless
   * `reread` (the actor then reads for itself: a name that will attempt reads
   * its own failure record).
   */
  restOrWake(record: NameRecord, loaded: Preloaded, reread: boolean): void {
    const room = this.roomForActor;
    if ('readError' in loaded || (room && !reread)) {
      record.preloaded = loaded;
      return void this.wake(record);
    }
    const rests = this.#deps.questions.afterLoad(loaded);
    if (!room && rests.hasTag(TAGS.maySleep) && this.#sleep(record, rests)) return;
    // A name the chart lets rest does not need its failure record read again; one that will attempt does.
    // (Metadata taken unparsed is handed over all the same: the actor's load reads both again and checks it.)
    if (!reread || rests.hasTag(TAGS.maySleep) || isUnverified(loaded.certificate)) record.preloaded = loaded;
    this.wake(record);
  }

  /**
   * An event for a name without an actor: a sleeping name asks the chart and
   * stays asleep with the result when the chart lets it (nothing due), else
   * wakes with it. An answer that changes nothing leaves the name as it was
   * (its record, its wake-up: an ARI recheck of an unchanged window costs no
   * write). A name not read yet will read storage anyway: ignored.
   */
  sendOrAsk(record: NameRecord, event: CertificateEvent): void {
    if (record.actor) return record.actor.send(event);
    const sleeping = this.sleepingOf(record);
    if (!sleeping) return;
    const { questions, core } = this.#deps;
    const resting = questions.afterLoad(sleeping);
    const snapshot = questions.next(resting, event);
    // Nothing changed (a state past its timer waits for that wake-up, already in the heap).
    if (snapshot === resting) return;
    const due = questions.nextTimerAt(snapshot);
    if (snapshot.hasTag(TAGS.maySleep) && due !== undefined && due > core.clock.now() && this.#sleep(record, snapshot, due)) return;
    // Woken with the chart's answer (its certificate may be new: the record still shows the old one).
    record.preloaded ??= asleep(snapshot) ?? sleeping;
    this.wake(record);
  }

  /**
   * The certificate parsed from storage disagrees with the metadata the scan
   * took unparsed (loads.ts): a sleeping name wakes from what was parsed
   * (the parsed values win). A live actor read and parsed for itself already.
   */
  adoptParsed(record: NameRecord, parsed: Preloaded): void {
    if (record.actor || !record.sleeping || this.#deps.core.stopped) return;
    record.preloaded = parsed;
    this.wake(record, true);
  }

  /** A sleeping name's timer is due: wake its actor, which resumes from the record and lets the chart act. */
  wakeDue(slot: number): void {
    const record = this.#bySlot[slot];
    if (record?.sleeping && !this.#deps.core.stopped) this.wake(record);
  }

  /**
   * Drop a name once the attempt in flight has ended (the state it ends in has
   * answered every waiter with its outcome), after that transition, never inside it.
   */
  removeAfterAttempt(record: NameRecord, why: string): void {
    this.#evicting.set(record.name, why);
  }

  /** Drop a name altogether (an on-demand name no longer allowed): its actor stops, its timers go. */
  remove(record: NameRecord): void {
    if (this.#records.get(record.name) !== record) return;
    const actor = record.actor;
    if (actor) {
      // Stopped while still held, so whatever it holds is released (`stopped`).
      actor.send({ type: 'STOP' });
      record.actor = undefined;
      this.#live--;
      actor.stop();
    }
    this.#records.delete(record.name);
    for (const alias of record.names?.slice(1) ?? []) if (this.#aliases.get(alias) === record) this.#aliases.delete(alias);
    this.#deps.view.counts.remove(record.state);
    this.#resting.delete(record.name);
    this.#evicting.delete(record.name);
    this.#deps.queue.cancel('wake', record.slot);
    this.#deps.queue.cancel('ari', record.slot);
    this.#bySlot[record.slot] = undefined;
    this.#freeSlots.push(record.slot);
  }

  /** The engine stops: every actor enters `stopped` (releasing what it held) and stops; no name is held any more. */
  stopAll(): void {
    this.#deps.queue.clear();
    for (const record of this.#records.values()) {
      record.actor?.send({ type: 'STOP' });
      record.actor?.stop();
    }
    this.#records.clear();
    this.#bySlot.length = 0;
    this.#renewAt = new Float64Array(64);
    this.#freeSlots.length = 0;
    this.#aliases.clear();
    this.#deps.view.counts.clear();
    this.#resting.clear();
    this.#evicting.clear();
  }

  /** A slot never used yet, the per-slot column grown to hold it. */
  #newSlot(): number {
    const slot = this.#bySlot.length;
    if (slot >= this.#renewAt.length) {
      const grown = new Float64Array(this.#renewAt.length * 2);
      grown.set(this.#renewAt);
      this.#renewAt = grown;
    }
    return slot;
  }

  #evictRefused(record: NameRecord): void {
    const why = this.#evicting.get(record.name);
    if (why === undefined) return;
    this.#evicting.delete(record.name);
    setImmediate(() => {
      if (this.#deps.core.stopped) return;
      this.remove(record);
      this.#deps.core.logger.info({ name: record.name }, why);
    });
  }

  /** Track live actors that rest where the chart lets them sleep; sleep the excess. */
  #noteRest(record: NameRecord, snapshot: CertificateSnapshot): void {
    this.#resting.delete(record.name);
    if (!snapshot.hasTag(TAGS.maySleep)) return;
    this.#resting.set(record.name, record);
    this.#sleepExcess();
  }

  /** Sleep the least recently active resting actors beyond `maxLiveActors` (after the transition that asked, never inside it). */
  #sleepExcess(): void {
    if (this.#sleepPending || this.#live <= this.#deps.core.settings.maxLiveActors) return;
    this.#sleepPending = true;
    setImmediate(() => {
      this.#sleepPending = false;
      for (const record of this.#resting.values()) {
        if (this.#deps.core.stopped || this.#live <= this.#deps.core.settings.maxLiveActors) break;
        this.#putToSleep(record);
      }
    });
  }

  /** Replace a resting actor with nothing in flight by its record. */
  #putToSleep(record: NameRecord): void {
    const actor = record.actor;
    if (!actor || this.#deps.held.holds(record) || record.reloading) return;
    const snapshot = actor.getSnapshot();
    if (snapshot.status !== 'active' || !snapshot.hasTag(TAGS.maySleep) || !this.#sleep(record, snapshot)) return;
    record.actor = undefined;
    this.#live--;
    this.#resting.delete(record.name);
    actor.stop();
  }

  /**
   * Keep a name as a record of a resting snapshot, woken when the chart's
   * next timer for it would fire (`due`, when the caller asked already). False
   * (nothing changed) when the snapshot has no certificate or no timer to wake it by.
   */
  #sleep(record: NameRecord, snapshot: CertificateSnapshot, due = this.#deps.questions.nextTimerAt(snapshot)): boolean {
    const sleeping = asleep(snapshot);
    if (!sleeping || due === undefined) return false;
    record.sleeping = sleeping.failure ? { failure: sleeping.failure } : RESTED;
    this.#renewAt[record.slot] = sleeping.renewAt;
    this.#deps.queue.schedule('wake', record.slot, due);
    this.#deps.view.show(record, snapshot);
    return true;
  }
}

/**
 * What a sleeping name keeps of a resting snapshot: enough for its actor to
 * resume from it (the chart's `adoptStored` gives the same context again).
 */
export function asleep(snapshot: CertificateSnapshot): SleepingName | undefined {
  const { certificate, renewAt, attempts, lastError, nextAttemptAt, orders, failingSince } = snapshot.context;
  if (!certificate || renewAt === undefined) return undefined;
  // The issuance floor's orders stay with the record, so waking does not forget them, except the one
  // the chart derives from the certificate itself when nothing else is recorded (its notBefore, within
  // the window: `ordersOfLoaded`): every name of a freshly issued fleet would keep an object and an
  // array for it (~140 B a name). Waking without a failure record derives it again, the same.
  const derived = attempts === 0 && nextAttemptAt === undefined && lastError === undefined && failingSince === undefined && orders?.length === 1 && orders[0] === certificate.notBefore;
  const kept = !derived && (attempts > 0 || nextAttemptAt !== undefined || orders !== undefined);
  return {
    certificate,
    renewAt,
    ...(kept ? { failure: { attempts, lastError, nextAttemptAt, ...(orders ? { orders } : {}), ...(failingSince !== undefined ? { failingSince } : {}) } } : {}),
  };
}

/**
 * When names without an actor need attention: one min-heap of due times and
 * one clock timer for the earliest, so a million sleeping names cost no
 * timers and no per-tick scans. Each entry has a kind (a sleeping name's
 * wake-up, an ARI recheck, …), each kind its own handler; a name has at most
 * one due time per kind. Rescheduling or cancelling leaves the old heap entry
 * behind; it is recognised as stale (its time no longer matches) when it
 * surfaces.
 *
 * Names are given by their *slot* (a small integer residency assigns, reused
 * after a name is removed), and everything is kept in typed arrays indexed by
 * slot or heap position: no object, no boxed number and no `Map` entry per
 * scheduled name (an object-per-entry heap with a due-time `Map` per kind
 * cost ~240 B a sleeping name; this ~40 B, BENCHMARKS.md). A slot reused by
 * another name is safe: an old entry is live only if its time equals the
 * slot's current due time, and then it fires once, at that time, for
 * whichever name holds the slot when it fires.
 *
 * Handlers cannot throw out of the queue: a throw is reported to `onError`
 * and the remaining due entries still run.
 */
import type { Clock, TimerHandle } from '../types.js';

/** First capacity of the per-slot and heap arrays (they double as needed). */
const INITIAL_CAPACITY = 64;

export class WakeQueue<K extends string> {
  readonly #clock: Clock;
  readonly #kinds: readonly K[];
  readonly #kindIndex: ReadonlyMap<K, number>;
  readonly #handlers: ReadonlyArray<(slot: number) => void>;
  readonly #onError: (error: unknown, kind: K, slot: number) => void;
  /** Per kind, the live due time of each slot (NaN: not scheduled); heap entries that disagree are stale. */
  #dueAt: Float64Array[];
  /** Per kind, how many slots are scheduled. */
  readonly #counts: number[];
  /** The heap: due times, and `slot * kinds + kind` at the same position (12 B an entry). */
  #heapAt = new Float64Array(INITIAL_CAPACITY);
  #heapKey = new Uint32Array(INITIAL_CAPACITY);
  #length = 0;
  #timer: TimerHandle | undefined;
  #timerAt = Infinity;

  constructor(clock: Clock, handlers: Readonly<Record<K, (slot: number) => void>>, onError: (error: unknown, kind: K, slot: number) => void) {
    this.#clock = clock;
    this.#kinds = Object.keys(handlers) as K[];
    this.#kindIndex = new Map(this.#kinds.map((k, i) => [k, i]));
    this.#handlers = this.#kinds.map((k) => handlers[k]);
    this.#onError = onError;
    this.#dueAt = this.#kinds.map(() => new Float64Array(INITIAL_CAPACITY).fill(NaN));
    this.#counts = this.#kinds.map(() => 0);
  }

  /** Run `kind`'s handler for `slot` at `at` (ms since epoch), replacing its earlier schedule of that kind. */
  schedule(kind: K, slot: number, at: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot > this.#maxSlot) throw new RangeError(`WakeQueue: a slot is an integer from 0 to ${this.#maxSlot} (got ${slot})`);
    if (Number.isNaN(at)) throw new RangeError('WakeQueue: a due time is a number');
    const k = this.#kind(kind);
    if (slot >= this.#dueAt[k]!.length) this.#growSlots(slot);
    const due = this.#dueAt[k]!;
    if (Number.isNaN(due[slot]!)) this.#counts[k]!++;
    due[slot] = at;
    this.#push(at, slot * this.#kinds.length + k);
    // Stale entries are dropped as they surface; rebuild when they would dominate the heap.
    if (this.#length > 2 * this.#scheduled() + 1024) this.#compact();
    if (at < this.#timerAt) this.#arm();
  }

  cancel(kind: K, slot: number): void {
    const k = this.#kind(kind);
    const due = this.#dueAt[k]!;
    if (slot < due.length && !Number.isNaN(due[slot]!)) {
      due[slot] = NaN;
      this.#counts[k]!--;
    }
  }

  /** When `slot` is due for `kind`, if scheduled. */
  dueAt(kind: K, slot: number): number | undefined {
    const due = this.#dueAt[this.#kind(kind)]!;
    const at = slot < due.length ? due[slot]! : NaN;
    return Number.isNaN(at) ? undefined : at;
  }

  /** Slots scheduled for `kind`. */
  size(kind: K): number {
    return this.#counts[this.#kind(kind)]!;
  }

  /** Heap entries held, stale ones included (for tests: bounded by about twice the scheduled ones). */
  get heapLength(): number {
    return this.#length;
  }

  clear(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#dueAt = this.#kinds.map(() => new Float64Array(INITIAL_CAPACITY).fill(NaN));
    this.#counts.fill(0);
    this.#heapAt = new Float64Array(INITIAL_CAPACITY);
    this.#heapKey = new Uint32Array(INITIAL_CAPACITY);
    this.#length = 0;
  }

  #kind(kind: K): number {
    const k = this.#kindIndex.get(kind);
    if (k === undefined) throw new RangeError(`WakeQueue: unknown kind ${String(kind)}`);
    return k;
  }

  /** The largest slot whose heap key (`slot * kinds + kind`) fits the heap's 32-bit keys. */
  get #maxSlot(): number {
    return Math.floor(0xffff_ffff / this.#kinds.length) - 1;
  }

  #scheduled(): number {
    let n = 0;
    for (const c of this.#counts) n += c;
    return n;
  }

  /** Whether the heap entry at `i` is its slot's current schedule of its kind. */
  #live(i: number): boolean {
    const key = this.#heapKey[i]!;
    const n = this.#kinds.length;
    const due = this.#dueAt[key % n]!;
    const slot = Math.floor(key / n);
    return slot < due.length && due[slot] === this.#heapAt[i];
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    const n = this.#kinds.length;
    const due: number[] = [];
    while (this.#length > 0 && this.#heapAt[0]! <= now) {
      const live = this.#live(0);
      const key = this.#pop();
      if (!live) continue;
      this.cancel(this.#kinds[key % n]!, Math.floor(key / n));
      due.push(key);
    }
    this.#arm();
    // Handlers run after the heap is consistent: they may schedule again.
    for (const key of due) {
      const k = key % n;
      const slot = Math.floor(key / n);
      try {
        this.#handlers[k]!(slot);
      } catch (error) {
        this.#onError(error, this.#kinds[k]!, slot);
      }
    }
  }

  #arm(): void {
    while (this.#length > 0 && !this.#live(0)) this.#pop();
    if (this.#length === 0 || this.#heapAt[0] === this.#timerAt) return;
    const next = this.#heapAt[0]!;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = next;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, next - this.#clock.now()));
  }

  /** Drop the stale entries and restore the heap order bottom-up (O(n), in place). */
  #compact(): void {
    let kept = 0;
    for (let i = 0; i < this.#length; i++) {
      if (!this.#live(i)) continue;
      this.#heapAt[kept] = this.#heapAt[i]!;
      this.#heapKey[kept] = this.#heapKey[i]!;
      kept++;
    }
    this.#length = kept;
    for (let i = (kept >> 1) - 1; i >= 0; i--) this.#siftDown(i, this.#heapAt[i]!, this.#heapKey[i]!);
    // Give memory back after a mass cancel (a quarter full at most).
    if (this.#heapAt.length > INITIAL_CAPACITY && kept * 4 < this.#heapAt.length) this.#resizeHeap(Math.max(INITIAL_CAPACITY, kept * 2));
  }

  #push(at: number, key: number): void {
    if (this.#length === this.#heapAt.length) this.#resizeHeap(this.#length * 2);
    const heapAt = this.#heapAt;
    const heapKey = this.#heapKey;
    let i = this.#length++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heapAt[parent]! <= at) break;
      heapAt[i] = heapAt[parent]!;
      heapKey[i] = heapKey[parent]!;
      i = parent;
    }
    heapAt[i] = at;
    heapKey[i] = key;
  }

  /** Remove the top entry; returns its key. */
  #pop(): number {
    const top = this.#heapKey[0]!;
    const last = --this.#length;
    if (last > 0) this.#siftDown(0, this.#heapAt[last]!, this.#heapKey[last]!);
    return top;
  }

  /** Place (`at`, `key`) at `i` or below, moving smaller children up. */
  #siftDown(i: number, at: number, key: number): void {
    const heapAt = this.#heapAt;
    const heapKey = this.#heapKey;
    const length = this.#length;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && heapAt[right]! < heapAt[left]! ? right : left;
      if (heapAt[child]! >= at) break;
      heapAt[i] = heapAt[child]!;
      heapKey[i] = heapKey[child]!;
      i = child;
    }
    heapAt[i] = at;
    heapKey[i] = key;
  }

  #resizeHeap(capacity: number): void {
    const at = new Float64Array(capacity);
    const key = new Uint32Array(capacity);
    at.set(this.#heapAt.subarray(0, this.#length));
    key.set(this.#heapKey.subarray(0, this.#length));
    this.#heapAt = at;
    this.#heapKey = key;
  }

  #growSlots(slot: number): void {
    this.#dueAt = this.#dueAt.map((old) => {
      let capacity = old.length;
      while (capacity <= slot) capacity *= 2;
      const grown = new Float64Array(capacity).fill(NaN);
      grown.set(old);
      return grown;
    });
  }
}


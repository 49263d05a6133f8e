/**
 * When names without an actor need attention: one min-heap of due times and
 * one clock timer for the earliest, so 100,000 sleeping names cost no timers
 * and no per-tick scans. Each entry has a kind (a sleeping name's wake-up,
 * an ARI recheck, …), each kind its own handler; a name has at most one due
 * time per kind. Rescheduling or cancelling leaves the old heap entry behind;
 * it is recognised as stale (its time no longer matches) when it surfaces.
 *
 * Handlers cannot throw out of the queue: a throw is reported to `onError`
 * and the remaining due entries still run.
 */
import type { Clock, TimerHandle } from '../types.js';

interface Entry<K> {
  at: number;
  name: string;
  kind: K;
}

export class WakeQueue<K extends string> {
  readonly #clock: Clock;
  readonly #handlers: Readonly<Record<K, (name: string) => void>>;
  readonly #onError: (error: unknown, kind: K, name: string) => void;
  /** The live due time of each scheduled name, per kind; heap entries that disagree are stale. */
  readonly #dueAt = new Map<K, Map<string, number>>();
  readonly #heap: Array<Entry<K>> = [];
  #scheduled = 0;
  #timer: TimerHandle | undefined;
  #timerAt = Infinity;

  constructor(clock: Clock, handlers: Readonly<Record<K, (name: string) => void>>, onError: (error: unknown, kind: K, name: string) => void) {
    this.#clock = clock;
    this.#handlers = handlers;
    this.#onError = onError;
    for (const kind of Object.keys(handlers) as K[]) this.#dueAt.set(kind, new Map());
  }

  /** Run `kind`'s handler for `name` at `at` (ms since epoch), replacing its earlier schedule of that kind. */
  schedule(kind: K, name: string, at: number): void {
    const due = this.#dueAt.get(kind)!;
    if (!due.has(name)) this.#scheduled++;
    due.set(name, at);
    this.#push({ at, name, kind });
    // Stale entries are dropped as they surface; rebuild when they would dominate the heap.
    if (this.#heap.length > 2 * this.#scheduled + 1024) this.#compact();
    if (at < this.#timerAt) this.#arm();
  }

  cancel(kind: K, name: string): void {
    if (this.#dueAt.get(kind)!.delete(name)) this.#scheduled--;
  }

  /** When `name` is due for `kind`, if scheduled. */
  dueAt(kind: K, name: string): number | undefined {
    return this.#dueAt.get(kind)!.get(name);
  }

  /** Names scheduled for `kind`. */
  size(kind: K): number {
    return this.#dueAt.get(kind)!.size;
  }

  clear(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    for (const due of this.#dueAt.values()) due.clear();
    this.#scheduled = 0;
    this.#heap.length = 0;
  }

  #live(entry: Entry<K>): boolean {
    return this.#dueAt.get(entry.kind)!.get(entry.name) === entry.at;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    const due: Array<Entry<K>> = [];
    while (this.#heap.length > 0 && this.#heap[0]!.at <= now) {
      const entry = this.#pop()!;
      if (!this.#live(entry)) continue;
      this.cancel(entry.kind, entry.name);
      due.push(entry);
    }
    this.#arm();
    // Handlers run after the heap is consistent: they may schedule again.
    for (const { kind, name } of due) {
      try {
        this.#handlers[kind](name);
      } catch (error) {
        this.#onError(error, kind, name);
      }
    }
  }

  #arm(): void {
    while (this.#heap.length > 0 && !this.#live(this.#heap[0]!)) this.#pop();
    const next = this.#heap[0];
    if (next === undefined || next.at === this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = next.at;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, next.at - this.#clock.now()));
  }

  #compact(): void {
    const live = this.#heap.filter((e) => this.#live(e));
    this.#heap.length = 0;
    for (const e of live) this.#push(e);
  }

  #push(entry: Entry<K>): void {
    const heap = this.#heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= entry.at) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  #pop(): Entry<K> | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left;
      if (heap[child]!.at >= last.at) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}

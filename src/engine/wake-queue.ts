/**
 * When dormant names must wake: one min-heap of due times and one clock timer
 * for the earliest, so 100,000 sleeping names cost no timers and no per-tick
 * scans. Rescheduling or cancelling a name leaves its old heap entry behind;
 * it is recognised as stale (its time no longer matches) when it surfaces.
 */
import type { Clock, TimerHandle } from '../types.js';

interface Entry {
  at: number;
  name: string;
}

export class WakeQueue {
  readonly #clock: Clock;
  readonly #onDue: (name: string) => void;
  /** The live due time of each scheduled name; heap entries that disagree are stale. */
  readonly #dueAt = new Map<string, number>();
  readonly #heap: Entry[] = [];
  #timer: TimerHandle | undefined;
  #timerAt = Infinity;

  constructor(clock: Clock, onDue: (name: string) => void) {
    this.#clock = clock;
    this.#onDue = onDue;
  }

  /** Wake `name` at `at` (ms since epoch), replacing any earlier schedule of it. */
  schedule(name: string, at: number): void {
    this.#dueAt.set(name, at);
    this.#push({ at, name });
    // Stale entries are dropped as they surface; rebuild when they would dominate the heap.
    if (this.#heap.length > 2 * this.#dueAt.size + 1024) this.#compact();
    if (at < this.#timerAt) this.#arm();
  }

  cancel(name: string): void {
    this.#dueAt.delete(name);
  }

  /** When `name` is due, if scheduled. */
  dueAt(name: string): number | undefined {
    return this.#dueAt.get(name);
  }

  get size(): number {
    return this.#dueAt.size;
  }

  clear(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#dueAt.clear();
    this.#heap.length = 0;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    const due: string[] = [];
    while (this.#heap.length > 0 && this.#heap[0]!.at <= now) {
      const { at, name } = this.#pop()!;
      if (this.#dueAt.get(name) !== at) continue; // stale
      this.#dueAt.delete(name);
      due.push(name);
    }
    this.#arm();
    // Callbacks run after the heap is consistent: they may schedule again.
    for (const name of due) this.#onDue(name);
  }

  #arm(): void {
    while (this.#heap.length > 0 && this.#dueAt.get(this.#heap[0]!.name) !== this.#heap[0]!.at) this.#pop();
    const next = this.#heap[0];
    if (next === undefined || next.at === this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = next.at;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, next.at - this.#clock.now()));
  }

  #compact(): void {
    const live = this.#heap.filter((e) => this.#dueAt.get(e.name) === e.at);
    this.#heap.length = 0;
    for (const e of live) this.#push(e);
  }

  #push(entry: Entry): void {
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

  #pop(): Entry | undefined {
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

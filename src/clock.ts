/**
 * Clocks. Every delay in certstate (renewal, backoff, handshake deadlines,
 * XState `after`) goes through one `Clock`, because:
 * - Node fires a `setTimeout` longer than 2^31−1 ms (24.8 days) after 1 ms,
 *   so the real clock splits long waits into chunks and re-arms;
 * - tests drive time with `ManualClock` instead of sleeping.
 */
import type { Clock, TimerHandle } from './types.js';

/** Longest delay Node's `setTimeout` honours. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

interface RealTimer {
  timeout: NodeJS.Timeout | undefined;
  cancelled: boolean;
}

/**
 * The real clock. Long waits are split into chunks of at most `MAX_TIMER_MS`
 * and re-armed against the absolute due time, so they never fire early.
 * Timers are `unref`ed: certstate never keeps a process alive by itself.
 */
export function realClock(): Clock {
  return {
    now: () => Date.now(),
    setTimeout(fn, delayMs) {
      const dueAt = Date.now() + Math.max(0, delayMs);
      const timer: RealTimer = { timeout: undefined, cancelled: false };
      const arm = () => {
        const remaining = dueAt - Date.now();
        if (remaining > MAX_TIMER_MS) {
          timer.timeout = setTimeout(arm, MAX_TIMER_MS);
        } else {
          timer.timeout = setTimeout(() => {
            if (!timer.cancelled) fn();
          }, Math.max(0, remaining));
        }
        timer.timeout.unref();
      };
      arm();
      return timer;
    },
    clearTimeout(handle) {
      const timer = handle as RealTimer;
      if (!timer || typeof timer !== 'object') return;
      timer.cancelled = true;
      if (timer.timeout !== undefined) clearTimeout(timer.timeout);
    },
  };
}

interface ManualTimer {
  id: number;
  dueAt: number;
  fn: () => void;
}

/**
 * A simulated clock for tests: time moves only when `advance`/`advanceTo` is
 * called, firing due timers in order (timers scheduled by a firing timer that
 * fall inside the window fire too).
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers = new Map<number, ManualTimer>();

  constructor(startAt: number = Date.UTC(2026, 0, 1)) {
    this.#now = startAt;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    const id = ++this.#seq;
    this.#timers.set(id, { id, dueAt: this.#now + Math.max(0, delayMs), fn });
    return { id };
  }

  clearTimeout(handle: TimerHandle): void {
    const id = (handle as { id?: number } | undefined)?.id;
    if (id !== undefined) this.#timers.delete(id);
  }

  /** Number of pending timers (tests assert nothing is left behind). */
  get pending(): number {
    return this.#timers.size;
  }

  /** Due time of the earliest pending timer, if any. */
  nextDueAt(): number | undefined {
    let next: number | undefined;
    for (const t of this.#timers.values()) if (next === undefined || t.dueAt < next) next = t.dueAt;
    return next;
  }

  /** Move time forward by `ms`, firing every timer that falls due. */
  advance(ms: number): void {
    this.advanceTo(this.#now + ms);
  }

  /** Move time forward to `target`, firing due timers in due order. */
  advanceTo(target: number): void {
    for (;;) {
      let next: ManualTimer | undefined;
      for (const t of this.#timers.values()) {
        if (t.dueAt <= target && (next === undefined || t.dueAt < next.dueAt || (t.dueAt === next.dueAt && t.id < next.id))) next = t;
      }
      if (!next) break;
      this.#timers.delete(next.id);
      if (next.dueAt > this.#now) this.#now = next.dueAt;
      next.fn();
    }
    if (target > this.#now) this.#now = target;
  }
}

/**
 * Waiting for a storage lock: the loop every backend shares. A backend only
 * says how to try once; this module retries, sleeps, wakes early when a lock
 * is released in this process, and honours the caller's `AbortSignal`.
 */

/** The reason an aborted wait rejects with: the signal's own reason, as `fetch` does. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError');
}

/** A lease must be a positive, finite number of milliseconds. */
export function assertValidTtl(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`lock ttl must be a positive number of ms, got ${ttlMs}`);
}

/** Outcome of one attempt to take a lock. */
export type Attempt<L> = { lock: L } | { retryInMs: number };

/**
 * Sleepers per lock key. Releases within one process wake waiters at once;
 * everything else (expiry, other processes) is noticed by polling.
 */
export class LockWaiters {
  readonly #sleepers = new Map<string, Set<() => void>>();

  /** Wake everyone waiting on `key` now (called after a release). */
  wake(key: string): void {
    for (const wakeUp of [...(this.#sleepers.get(key) ?? [])]) wakeUp();
  }

  /** Sleep up to `ms`, or until `wake(key)`; reject when `signal` aborts. */
  sleep(key: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      let sleepers = this.#sleepers.get(key);
      if (!sleepers) this.#sleepers.set(key, (sleepers = new Set()));
      const set = sleepers;
      const settle = (error?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        set.delete(wakeUp);
        if (set.size === 0 && this.#sleepers.get(key) === set) this.#sleepers.delete(key);
        if (error === undefined) resolve();
        else reject(error);
      };
      const wakeUp = () => settle();
      const onAbort = () => settle(abortReason(signal!));
      const timer = setTimeout(wakeUp, ms);
      set.add(wakeUp);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * Try `attempt` until it yields a lock, sleeping between tries. If the signal
 * aborts while an attempt is in flight and that attempt wins, the lock is given
 * back (`giveBack`) so that an aborted caller never holds a lock it cannot see.
 */
export async function acquireWithRetry<L>(
  key: string,
  waiters: LockWaiters,
  pollMs: number,
  attempt: () => Promise<Attempt<L>>,
  giveBack: (lock: L) => Promise<void>,
  signal?: AbortSignal,
): Promise<L> {
  for (;;) {
    if (signal?.aborted) throw abortReason(signal);
    const outcome = await attempt();
    if ('lock' in outcome) {
      if (signal?.aborted) {
        await giveBack(outcome.lock);
        throw abortReason(signal);
      }
      return outcome.lock;
    }
    await waiters.sleep(key, Math.max(1, Math.min(pollMs, outcome.retryInMs)), signal);
  }
}

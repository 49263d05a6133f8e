/**
 * Cluster-wide chores under a storage lock: one process does the work, the
 * others find the lock taken (or the work done) and leave it. The lease is
 * kept (lease.ts) while the work runs, so a long chore keeps its lock and a
 * crashed holder's lock runs out; writes under it are fenced.
 */
import type { Clock, Fence, Logger, Storage, StorageLock } from '../types.js';
import { safeError } from '../safe-error.js';
import { keepLease } from './lease.js';

/** What a lease needs. */
export interface LeaseDeps {
  clock: Clock;
  logger: Logger;
  /** The lock's lease, ms (lease.ts renews it while the chore runs). */
  lockTtlMs: number;
}

/** Options of `withStorageLock`. */
export interface ChoreLockOptions {
  /** Longest real time to wait for the lock before leaving the chore to its holder, ms. */
  waitMs: number;
  /** Aborts the wait (engine stop). */
  signal?: AbortSignal;
}

/**
 * Run `chore` holding lock `key` (its fence passed along for fenced writes),
 * then release. Resolves `{ ran: false }` when the lock stays taken for
 * `waitMs` (another process is doing the chore) or `signal` aborts the wait;
 * rejects with the chore's or the storage's error otherwise.
 */
export async function withStorageLock<T>(
  storage: Storage,
  key: string,
  deps: LeaseDeps,
  options: ChoreLockOptions,
  chore: (fence: Fence) => Promise<T>,
): Promise<{ ran: true; value: T } | { ran: false }> {
  const waiting = new AbortController();
  const timer = setTimeout(() => waiting.abort(), options.waitMs);
  timer.unref();
  const stop = () => waiting.abort();
  options.signal?.addEventListener('abort', stop, { once: true });
  let lock: StorageLock;
  try {
    lock = await storage.lock(key, deps.lockTtlMs, { signal: waiting.signal });
  } catch (error) {
    if (waiting.signal.aborted) return { ran: false };
    throw error;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', stop);
  }
  const lease = keepLease(lock, { ttlMs: deps.lockTtlMs, clock: deps.clock, logger: deps.logger, signal: options.signal ?? new AbortController().signal });
  try {
    return { ran: true, value: await chore({ lockKey: key, token: lock.fencingToken }) };
  } finally {
    lease.stop();
    await lock.release().catch((error: unknown) => deps.logger.warn({ lock: key, err: safeError(error) }, 'lock release failed'));
  }
}

/**
 * In-memory storage: the test double, and a cluster-in-one-process when
 * several engines share one instance (locks belong to lock objects, not to
 * the instance, so two engines on one `memoryStorage` exclude each other
 * exactly as two processes on one Redis would).
 */
import { FencingError, LockLostError } from '../../errors.js';
import type { DeleteOptions, Fence, LockOptions, Storage, StorageLock, StorageStat, StoreOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix } from './key.js';
import { acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';

/** Options of `memoryStorage`. */
export interface MemoryStorageOptions {
  /**
   * Clock for leases and `stat().modified`, ms since epoch (default `Date.now`).
   * Inject a simulated clock to expire leases without waiting.
   */
  now?: () => number;
  /**
   * How often a waiting `lock()` re-checks for an expired lease, in ms
   * (default 10). Releases wake waiters at once; polling only finds expiries.
   */
  pollIntervalMs?: number;
}

/** Tokens stay exact JavaScript integers. */
const MAX_TOKEN = Number.MAX_SAFE_INTEGER - 1;

interface LockState {
  /** Newest fencing token handed out for this key (0: never locked). */
  lastToken: number;
  holder?: { owner: object; expiresAt: number };
}

/** Create an in-memory `Storage` (description `memory`). Values live as long as the instance. */
export function memoryStorage(options: MemoryStorageOptions = {}): Storage {
  const now = options.now ?? Date.now;
  const pollMs = options.pollIntervalMs ?? 10;
  const values = new Map<string, { value: string; modified: number }>();
  const locks = new Map<string, LockState>();
  const waiters = new LockWaiters();

  function assertFresh(fence: Fence): void {
    assertValidKey(fence.lockKey);
    const current = locks.get(fence.lockKey)?.lastToken ?? 0;
    if (current === 0 || fence.token !== current) throw new FencingError(fence.lockKey, fence.token);
  }

  function tryLock(key: string, ttlMs: number): Attempt<StorageLock> {
    let state = locks.get(key);
    if (!state) locks.set(key, (state = { lastToken: 0 }));
    const t = now();
    if (state.holder && state.holder.expiresAt > t) return { retryInMs: state.holder.expiresAt - t };
    const owner = {};
    const lockState = state;
    lockState.holder = { owner, expiresAt: t + ttlMs };
    // As the shared storages do: max(previous + 1, the clock in µs), below 2^53.
    const next = lockState.lastToken + 1;
    const fencingToken = (lockState.lastToken = next < t * 1000 || next > MAX_TOKEN ? Math.floor(t * 1000) : next);
    const holds = () => lockState.holder?.owner === owner && lockState.holder.expiresAt > now();
    return {
      lock: {
        key,
        fencingToken,
        async renew() {
          if (!holds()) throw new LockLostError(key);
          lockState.holder = { owner, expiresAt: now() + ttlMs };
        },
        async release() {
          if (lockState.holder?.owner !== owner) return;
          lockState.holder = undefined;
          waiters.wake(key);
        },
      },
    };
  }

  return {
    description: 'memory',

    async load(key: string): Promise<string | undefined> {
      assertValidKey(key);
      return values.get(key)?.value;
    },

    async store(key: string, value: string, storeOptions?: StoreOptions): Promise<void> {
      assertValidKey(key);
      if (storeOptions?.fence) assertFresh(storeOptions.fence);
      values.set(key, { value, modified: now() });
    },

    async delete(key: string, deleteOptions?: DeleteOptions): Promise<void> {
      assertValidKey(key);
      if (deleteOptions?.fence) assertFresh(deleteOptions.fence);
      values.delete(key);
    },


    async list(prefix: string): Promise<string[]> {
      assertValidPrefix(prefix);
      return [...values.keys()].filter((key) => key.startsWith(prefix));
    },

    async *entries(prefix: string): AsyncGenerator<Array<readonly [string, string]>> {
      assertValidPrefix(prefix);
      let batch: Array<readonly [string, string]> = [];
      for (const [key, entry] of values) {
        if (!key.startsWith(prefix)) continue;
        batch.push([key, entry.value]);
        if (batch.length === 256) {
          yield batch;
          batch = [];
        }
      }
      if (batch.length > 0) yield batch;
    },

    async stat(key: string): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const entry = values.get(key);
      return entry && { size: Buffer.byteLength(entry.value, 'utf8'), modified: entry.modified };
    },

    async lock(key: string, ttlMs: number, lockOptions?: LockOptions): Promise<StorageLock> {
      assertValidKey(key);
      assertValidTtl(ttlMs);
      return acquireWithRetry(
        key,
        waiters,
        pollMs,
        async () => tryLock(key, ttlMs),
        (lock) => lock.release(),
        lockOptions?.signal,
      );
    },
  };
}

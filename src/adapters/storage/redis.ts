/**
 * Redis storage: keyed blobs, leased locks and fencing tokens shared by every
 * process of a cluster through one Redis server (ioredis client).
 *
 * Layout under the key prefix `P` (default `certstate:`). Storage keys only use
 * `[A-Za-z0-9._/-]`, so no key can contain `:` and the three namespaces can
 * never collide (a storage key `locks/issue/x` and the lock on it are distinct):
 *
 * | Redis key        | type   | holds                                                  |
 * |------------------|--------|--------------------------------------------------------|
 * | `P` `data:` key  | HASH   | `v` the value, `m` modification time (ms, Redis clock) |
 * | `P` `lock:` key  | STRING | the holder's random id, with a PX lease                |
 * | `P` `fence:` key | STRING | the newest fencing token (never deleted by certstate)  |
 *
 * Every write and delete also `PUBLISH`es `store:<key>` / `delete:<key>` on the
 * channel `P` `changes`, from the same script, for `watch()` (see notify.ts).
 *
 * Why a hash per value rather than a string plus a second metadata key: one
 * `HSET` of both fields is atomic by itself (no MULTI, no orphaned metadata
 * after a crash or a `DEL`), SCAN sees exactly one Redis key per stored value,
 * and `HSTRLEN` gives `stat().size` in O(1) without transferring the value.
 *
 * Every write goes through a Lua script that reads `TIME` on the server, so
 * `modified` comes from one clock for the whole cluster, and a fenced write
 * compares the fencing counter and writes in the same atomic step.
 *
 * Redis Cluster: the fenced-write script touches a data key and a fence key, so
 * they must share a slot; use a hash-tagged prefix such as `{certstate}:`
 * (which places all of certstate on one shard). Only a standalone or
 * Sentinel-managed `Redis` client is accepted.
 */
import { scanEntries } from './bulk-pages.js';
import { withDeadline } from './deadline.js';
import { randomUUID } from 'node:crypto';
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError, FencingError, LockLostError, StorageError } from '../../errors.js';
import type { DeleteOptions, LockOptions, Storage, StorageLock, StorageStat, StoreOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix } from './key.js';
import { checkKeys, optionKeys } from '../../option-keys.js';
import { importOnce } from '../../import-once.js';
import { encodeChange, type Unwatch, type WatchableStorage } from './notify.js';
import { pair, runScript, SCRIPTS, toStorageError } from './redis-scripts.js';
import { watchRedis } from './redis-watch.js';
import { acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';

/** Options of {@link redisStorage}. Give exactly one of `client` or `url`. */
export interface RedisStorageOptions {
  /**
   * An ioredis client owned by the caller: certstate never closes it unless
   * `ownsClient` is true. Its own settings (`maxRetriesPerRequest`, offline
   * queue, timeouts) are left alone; every certstate call is still bounded by
   * `operationTimeoutMs`. It must not use ioredis' `keyPrefix` (use `prefix`).
   */
  client?: Redis;
  /** A `redis://` / `rediss://` URL; certstate then creates (and closes) its own client. Requires the `ioredis` package. */
  url?: string;
  /** Extra ioredis options for the client created from `url` (override the bounded defaults at your own risk). */
  redisOptions?: RedisOptions;
  /** Close `client` on `close()`. Default: true for `url`, false for `client`. */
  ownsClient?: boolean;
  /** Prefix of every Redis key certstate writes. Default `certstate:`. */
  prefix?: string;
  /**
   * Upper bound of any single storage call (one Redis round trip or script),
   * after which it rejects with `StorageError`. Also used as ioredis'
   * `connectTimeout`/`commandTimeout` for a client created from `url`.
   * Default 5000 ms.
   */
  operationTimeoutMs?: number;
  /** Longest pause between two attempts while waiting for a busy lock. Default 200 ms. */
  maxLockPollMs?: number;
}

/** A {@link Storage} backed by Redis, with change notifications, plus what it exposes for tests and tooling. */
export interface RedisStorage extends WatchableStorage {
  /** The key prefix in use. */
  readonly prefix: string;
  /** Release the client if certstate owns it (idempotent). */
  close(): Promise<void>;
}

// ─── helpers ────────────────────────────────────────────────────────────────

/** Escape Redis glob metacharacters so a prefix matches literally in `SCAN MATCH`. */
export function escapeRedisGlob(text: string): string {
  return text.replace(/[\\*?[\]^]/g, (c) => `\\${c}`);
}


// ─── the storage ────────────────────────────────────────────────────────────

const OPTION_KEYS = optionKeys<RedisStorageOptions>({ client: true, url: true, redisOptions: true, ownsClient: true, prefix: true, operationTimeoutMs: true, maxLockPollMs: true });

/**
 * Create a Redis-backed {@link Storage}.
 *
 * Guarantees: each `store` is one atomic server-side step (readers see the old
 * or the new value); a fenced `store` is refused with `FencingError` unless its
 * token is still the newest for that lock key; a lock is held by at most one
 * holder while its lease runs (Redis' `PX` expiry is the lease); fencing tokens
 * only grow. Errors of the connection surface as `StorageError` within
 * `operationTimeoutMs`.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { redisStorage } from 'certstate/redis';
 * const storage = redisStorage({ client: new Redis(process.env.REDIS_URL!, { maxRetriesPerRequest: 1 }) });
 * ```
 */
export function redisStorage(options: RedisStorageOptions): RedisStorage {
  checkKeys(options ?? {}, OPTION_KEYS, 'redisStorage');
  if ((options.client === undefined) === (options.url === undefined)) {
    throw new ConfigError('redisStorage: give exactly one of `client` or `url`');
  }
  const prefix = options.prefix ?? 'certstate:';
  if (prefix.length === 0 || prefix.length > 200) throw new ConfigError('redisStorage: `prefix` must be 1–200 characters');
  const timeoutMs = options.operationTimeoutMs ?? 5000;
  if (!(timeoutMs > 0)) throw new ConfigError('redisStorage: `operationTimeoutMs` must be positive');
  const maxPollMs = Math.max(1, options.maxLockPollMs ?? 200);
  const ownsClient = options.ownsClient ?? options.url !== undefined;
  if (options.client?.options?.keyPrefix) {
    // ioredis prefixes KEYS of commands and scripts but neither SCAN's MATCH nor its replies: list() would break.
    throw new ConfigError('redisStorage: the ioredis client must not set `keyPrefix`; use the `prefix` option');
  }

  const dataKey = (key: string) => `${prefix}data:${key}`;
  const lockKey = (key: string) => `${prefix}lock:${key}`;
  const fenceKey = (key: string) => `${prefix}fence:${key}`;
  /** Pub/sub channel of change notifications (channels are not keys: no clash with the above). */
  const channel = `${prefix}changes`;
  const watchers = new Set<Unwatch>();

  const waiters = new LockWaiters();
  let clientPromise: Promise<Redis> | undefined = options.client ? Promise.resolve(options.client) : undefined;
  let closed = false;

  /** ioredis' client class, imported at `prepare()` or the first call: an optional peer, not loaded by the factory. */
  const loadDriver = importOnce(() =>
    // `Redis` is ioredis' named export of the class (CommonJS, found by Node's ESM interop).
    import('ioredis').then(
      (ioredis) => ioredis.Redis,
      (cause: unknown) => Promise.reject(new ConfigError(`redisStorage({ url }) needs the optional peer dependency ioredis: npm install ioredis (${String(cause)})`)),
    ),
  );

  /** Create the client for `url` on first use: the factory stays synchronous and ioredis stays an optional import. */
  function client(): Promise<Redis> {
    if (clientPromise) return clientPromise;
    clientPromise = (async () => {
      const RedisClass = await loadDriver();
      const redis = new RedisClass(options.url!, {
        // Bounded by design: a command queued while disconnected fails after one
        // reconnection attempt or `commandTimeout`, whichever comes first, instead
        // of ioredis' default 20 retries. Reconnection itself goes on forever in
        // the background, so the storage recovers when Redis comes back.
        maxRetriesPerRequest: 1,
        connectTimeout: timeoutMs,
        commandTimeout: timeoutMs,
        retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
        connectionName: 'certstate', // so operators can tell it apart in CLIENT LIST
        ...options.redisOptions,
      });
      // Errors reach callers through the commands that fail; without a listener
      // ioredis prints every reconnection failure to the console.
      redis.on('error', () => {});
      return redis;
    })();
    // A failed import must not be memoised for ever.
    clientPromise.catch(() => {
      clientPromise = undefined;
    });
    return clientPromise;
  }

  /** Run one Redis interaction with a deadline, turning every failure into a typed error. */
  async function run<T>(what: string, fn: (redis: Redis) => Promise<T>): Promise<T> {
    if (closed) throw new StorageError(`redis:${prefix} ${what}: storage is closed`, { code: 'ERR_STORAGE_CLOSED' });
    try {
      return await withDeadline(
        client().then((redis) => fn(redis)),
        timeoutMs,
        `redis:${prefix} ${what}`,
      );
    } catch (error) {
      throw toStorageError(error, `redis:${prefix} ${what}`);
    }
  }

  async function tryAcquire(key: string, holder: string, ttl: number): Promise<[number, number]> {
    return pair(await run(`lock ${key}`, (r) => runScript(r, SCRIPTS.acquire, [lockKey(key), fenceKey(key)], [holder, ttl])));
  }

  function heldLock(key: string, holder: string, ttl: number, fencingToken: number): StorageLock {
    let released = false;
    return {
      key,
      fencingToken,
      async renew() {
        if (released) throw new LockLostError(key);
        const extended = await run(`renew ${key}`, (r) => runScript(r, SCRIPTS.renew, [lockKey(key)], [holder, ttl]));
        if (Number(extended) !== 1) throw new LockLostError(key);
      },
      async release() {
        if (released) return;
        await run(`release ${key}`, (r) => runScript(r, SCRIPTS.release, [lockKey(key)], [holder]));
        released = true;
        waiters.wake(key);
      },
    };
  }

  const storage: RedisStorage = {
    prepare: async () => {
      if (options.url !== undefined) await loadDriver();
    },
    description: `redis:${prefix}`,
    prefix,

    async load(key) {
      assertValidKey(key);
      const value = await run(`load ${key}`, (r) => r.hget(dataKey(key), 'v'));
      return value ?? undefined;
    },

    async store(key, value, storeOptions?: StoreOptions) {
      assertValidKey(key);
      if (typeof value !== 'string') throw new TypeError('storage values are strings');
      const fence = storeOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const keys = fence ? [dataKey(key), fenceKey(fence.lockKey)] : [dataKey(key)];
      const args = [value, channel, encodeChange('store', key), ...(fence ? [fence.token] : [])];
      const [ok] = pair(await run(`store ${key}`, (r) => runScript(r, SCRIPTS.store, keys, args)));
      if (ok !== 1) throw new FencingError(fence!.lockKey, fence!.token);
    },

    async delete(key, deleteOptions?: DeleteOptions) {
      assertValidKey(key);
      const fence = deleteOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const keys = fence ? [dataKey(key), fenceKey(fence.lockKey)] : [dataKey(key)];
      const args = [channel, encodeChange('delete', key), ...(fence ? [fence.token] : [])];
      const [ok] = pair(await run(`delete ${key}`, (r) => runScript(r, SCRIPTS.delete, keys, args)));
      if (ok !== 1) throw new FencingError(fence!.lockKey, fence!.token);
    },

    async now() {
      return Number(await run('time', (r) => runScript(r, SCRIPTS.time, [], [])));
    },

    async list(keyPrefix) {
      assertValidPrefix(keyPrefix);
      const base = dataKey('');
      const match = `${escapeRedisGlob(base)}${escapeRedisGlob(keyPrefix)}*`;
      const found = new Set<string>(); // SCAN may return a key more than once
      let cursor = '0';
      // One deadline per SCAN page, not for the whole walk: a large keyspace is slow, not hung.
      do {
        const [next, batch] = await run(`list ${keyPrefix}`, (r) => r.scan(cursor, 'MATCH', match, 'COUNT', 1000));
        for (const redisKey of batch) found.add(redisKey.slice(base.length));
        cursor = next;
      } while (cursor !== '0');
      return [...found];
    },

    /** SCAN pages, each page's values in one pipelined round trip (see bulk-pages.ts). */
    entries(keyPrefix) {
      assertValidPrefix(keyPrefix);
      const base = dataKey('');
      const match = `${escapeRedisGlob(base)}${escapeRedisGlob(keyPrefix)}*`;
      return scanEntries(
        (cursor) => run(`entries ${keyPrefix}`, (r) => r.scan(cursor, 'MATCH', match, 'COUNT', 1000)),
        (redisKeys) =>
          run(`entries ${keyPrefix}`, async (r) => {
            const pipeline = r.pipeline();
            for (const k of redisKeys) pipeline.hget(k, 'v');
            const results = await pipeline.exec();
            if (!results) throw new Error('pipeline aborted');
            return results.map(([error, value]) => {
              if (error) throw error;
              return value as string | null;
            });
          }),
        base,
      );
    },

    async stat(key): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const [size, modified] = await run(`stat ${key}`, async (r) => {
        // One round trip, one atomic snapshot of both fields.
        const results = await r.multi().hstrlen(dataKey(key), 'v').hget(dataKey(key), 'm').exec();
        if (!results) throw new Error('transaction aborted');
        for (const [error] of results) if (error) throw error;
        return [Number(results[0][1]), results[1][1] as string | null] as const;
      });
      if (modified === null) return undefined;
      return { size, modified: Number(modified) };
    },

    async lock(key, ttlMs, lockOptions?: LockOptions) {
      assertValidKey(key);
      assertValidTtl(ttlMs);
      const ttl = Math.ceil(ttlMs); // PX takes whole milliseconds
      const holder = randomUUID();
      let pause = 5;
      const attempt = async (): Promise<Attempt<StorageLock>> => {
        let acquired: number, value: number;
        try {
          [acquired, value] = await tryAcquire(key, holder, ttl);
        } catch (error) {
          // We gave up waiting, but the script may still run on the server (a slow link delivers
          // it late): cancel it there, so that a lock nobody knows it holds does not block the
          // name for a whole TTL. Queued behind it on the same connection, so it runs after it.
          void run(`cancel lock ${key}`, (r) => runScript(r, SCRIPTS.release, [lockKey(key)], [holder])).catch(() => {});
          throw error;
        }
        if (acquired === 1) return { lock: heldLock(key, holder, ttl, value) };
        // Polling (releases in this process wake waiters at once), growing and
        // jittered so that waiters of other processes do not stampede; never
        // sleeping past the holder's expiry (value = its PTTL, -1 if none).
        pause = Math.min(pause * 2, maxPollMs);
        const jittered = pause / 2 + Math.random() * (pause / 2);
        return { retryInMs: value > 0 ? Math.min(jittered, value + 1) : jittered };
      };
      // An aborted caller whose last attempt won gives the lock back rather than leak it for a whole TTL.
      const giveBack = (lock: StorageLock) => lock.release().catch(() => {});
      return acquireWithRetry(key, waiters, maxPollMs, attempt, giveBack, lockOptions?.signal);
    },

    async watch(keyPrefix, onChange) {
      assertValidPrefix(keyPrefix);
      const redis = await run(`watch ${keyPrefix}`, async (r) => r);
      const unwatch = await watchRedis(redis, { channel, prefix: keyPrefix, onChange, timeoutMs });
      const stop: Unwatch = async () => {
        watchers.delete(stop);
        await unwatch();
      };
      watchers.add(stop);
      return stop;
    },

    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...watchers].map((stop) => stop()));
      if (!ownsClient || clientPromise === undefined) return;
      const redis = await clientPromise.catch(() => undefined);
      if (!redis) return;
      try {
        await withDeadline(redis.quit(), timeoutMs, 'quit');
      } catch {
        redis.disconnect();
      }
    },
  };
  return storage;
}

/**
 * PostgreSQL storage: keyed blobs, leased locks and fencing tokens shared by
 * every process of a cluster through one database (`pg` pool).
 *
 * Three tables, created idempotently by {@link migratePostgres}:
 *
 * - `<table>`: `key` (primary key), `value`, `modified`;
 * - `<table>_locks`: one lease row per lock key: `holder` (random per
 *   acquisition), `fencing_token`, `expires_at`;
 * - `<table>_index`: the engine's start-up index (postgres-index.ts).
 *
 * Every time is the database's `now()`: leases are granted, renewed and judged
 * expired on one clock for the whole cluster, never on the clocks of the
 * processes (which may drift or be paused).
 *
 * Every write and delete also `pg_notify`s `store:<key>` / `delete:<key>` on
 * the channel named like the table, in the same statement, for `watch()` (see
 * notify.ts).
 *
 * Lock rows are never deleted: a release only expires the lease. A row lost
 * anyway (a restore, a TRUNCATE) restarts its token at the database clock in
 * µs, above every token drawn before (see `acquire`).
 */
import { keysetPages, nextAfter, PAGE_BYTES } from './bulk-pages.js';
import { postgresStartupIndex } from './postgres-index.js';
import { withDeadline } from './deadline.js';
import { randomUUID } from 'node:crypto';
import type { Pool, PoolConfig, QueryResultRow } from 'pg';
import { ConfigError, FencingError, LockLostError, StorageError } from '../../errors.js';
import { checkKeys, optionKeys } from '../../option-keys.js';
import { importOnce } from '../../import-once.js';
import type { DeleteOptions, LockOptions, Storage, StorageLock, StorageStat, StoreOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix } from './key.js';
import { encodeChange, type Unwatch, type WatchableStorage } from './notify.js';
import { assertTableName, likePrefixPattern, statements, toStorageError } from './postgres-sql.js';
import { migratePostgres } from './postgres-migrate.js';
import { watchPostgres } from './postgres-watch.js';
import { boundedQuery, poolBoundsStatements } from './postgres-bounded.js';
import { acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';

export { likePrefixPattern } from './postgres-sql.js';
export { migratePostgres } from './postgres-migrate.js';

/** Options of {@link postgresStorage}. Give exactly one of `pool` or `connectionString`. */
export interface PostgresStorageOptions {
  /**
   * A `pg` Pool owned by the caller: certstate never ends it unless `ownsPool`
   * is true. Give it an `'error'` listener (as `pg` requires of every pool, or
   * an idle connection dropped by a server restart crashes the process) and a
   * `connectionTimeoutMillis`; every certstate call is bounded by
   * `operationTimeoutMs` regardless, in the server too: unless the pool's
   * config sets a `statement_timeout` no longer than `operationTimeoutMs`,
   * each statement runs in a transaction that sets one with `SET LOCAL`
   * (two more round trips; the pool's connections are left as they were).
   * Whichever deadline fires first (the pool's, ours, pg's `query_timeout`),
   * the call rejects with `ERR_STORAGE_TIMEOUT`.
   */
  pool?: Pool;
  /** A `postgres://` URL; certstate then creates (and ends) its own pool. Requires the `pg` package. */
  connectionString?: string;
  /** Extra `pg` pool settings for the pool created from `connectionString`. */
  poolConfig?: PoolConfig;
  /** End `pool` on `close()`. Default: true for `connectionString`, false for `pool`. */
  ownsPool?: boolean;
  /**
   * Name of the blob table; the lock table is `<table>_locks`. A lower-case SQL
   * identifier (`[a-z_][a-z0-9_]*`, at most 57 characters). Default `certstate`.
   */
  table?: string;
  /**
   * Create the tables on first use (once per storage). Default true. Set false
   * when the role certstate runs as may not create tables (PostgreSQL checks
   * that privilege even for `CREATE TABLE IF NOT EXISTS` on an existing table),
   * and run {@link migratePostgres} at deploy time instead.
   */
  autoMigrate?: boolean;
  /**
   * Upper bound of any single storage call, after which it rejects with
   * `StorageError`. Also the pool's `connectionTimeoutMillis`, `query_timeout`
   * and `statement_timeout` for a pool created from `connectionString`.
   * Default 5000 ms.
   */
  operationTimeoutMs?: number;
  /** Longest pause between two attempts while waiting for a busy lock. Default 200 ms. */
  maxLockPollMs?: number;
}

/** A {@link Storage} backed by PostgreSQL, with change notifications, plus its migration. */
export interface PostgresStorage extends WatchableStorage {
  /** The blob table's name (the lock table is `<table>_locks`). */
  readonly table: string;
  /** Create the tables if missing (idempotent, memoised; run automatically on first use unless `autoMigrate: false`). */
  migrate(): Promise<void>;
  /** End the pool if certstate owns it (idempotent). */
  close(): Promise<void>;
}

// ─── the storage ────────────────────────────────────────────────────────────

const OPTION_KEYS = optionKeys<PostgresStorageOptions>({ pool: true, connectionString: true, poolConfig: true, ownsPool: true, table: true, autoMigrate: true, operationTimeoutMs: true, maxLockPollMs: true });

/**
 * Create a PostgreSQL-backed {@link Storage}.
 *
 * Guarantees: every write is one atomic upsert (readers see the old or the new
 * value); a fenced `store` is refused with `FencingError` unless its token is
 * the lock row's current one; a lease is held by at most one holder while it
 * runs, judged on the database clock; fencing tokens only grow. Connection
 * failures and timeouts surface as `StorageError` within `operationTimeoutMs`.
 *
 * @example
 * ```ts
 * import { postgresStorage } from 'certstate/postgres';
 * const storage = postgresStorage({ connectionString: process.env.DATABASE_URL! });
 * ```
 */
export function postgresStorage(options: PostgresStorageOptions): PostgresStorage {
  checkKeys(options ?? {}, OPTION_KEYS, 'postgresStorage');
  if ((options.pool === undefined) === (options.connectionString === undefined)) {
    throw new ConfigError('postgresStorage: give exactly one of `pool` or `connectionString`');
  }
  const table = options.table ?? 'certstate';
  assertTableName(table);
  const timeoutMs = options.operationTimeoutMs ?? 5000;
  if (!(timeoutMs > 0)) throw new ConfigError('postgresStorage: `operationTimeoutMs` must be positive');
  const maxPollMs = Math.max(1, options.maxLockPollMs ?? 200);
  const ownsPool = options.ownsPool ?? options.connectionString !== undefined;
  const autoMigrate = options.autoMigrate ?? true;
  const sql = statements(table);
  const description = `postgres:${table}`;
  const waiters = new LockWaiters();
  const watchers = new Set<Unwatch>();

  let poolPromise: Promise<Pool> | undefined = options.pool ? Promise.resolve(options.pool) : undefined;
  let migrated: Promise<void> | undefined;
  let closed = false;

  /** pg's `Pool`, imported at `prepare()` or the first call: an optional peer, not loaded by the factory. */
  const loadDriver = importOnce(() =>
    import('pg').then(
      (pg) => pg.Pool,
      (cause: unknown) => Promise.reject(new ConfigError(`postgresStorage({ connectionString }) needs the optional peer dependency pg: npm install pg (${String(cause)})`)),
    ),
  );

  /** Create the pool for `connectionString` on first use: the factory stays synchronous and `pg` an optional import. */
  function pool(): Promise<Pool> {
    if (poolPromise) return poolPromise;
    poolPromise = (async () => {
      const PoolClass = await loadDriver();
      const created = new PoolClass({
        connectionString: options.connectionString,
        // Bounded by design: waiting for a connection, a reply, and the server's
        // own execution all give up after `operationTimeoutMs`.
        connectionTimeoutMillis: timeoutMs,
        query_timeout: timeoutMs,
        statement_timeout: timeoutMs,
        ...options.poolConfig,
      });
      // An idle connection dropped by a server restart is reported here; without
      // a listener `pg` would crash the process. The next query reconnects.
      created.on('error', () => {});
      return created;
    })();
    poolPromise.catch(() => {
      poolPromise = undefined;
    });
    return poolPromise;
  }

  function migrate(): Promise<void> {
    if (migrated) return migrated;
    migrated = pool().then((p) => migratePostgres(p, { table, timeoutMs }));
    // Not memoised on failure: the database may just be starting.
    migrated.catch(() => {
      migrated = undefined;
    });
    return migrated;
  }

  /**
   * One bounded query, after the migration, with every failure typed.
   * `binary`: the result in PostgreSQL's binary format, where a `bytea` is
   * its bytes as they are (pg hands them over decoded as UTF-8, as `load`
   * decodes a Buffer), not the text format's hex, twice their size, that pg
   * decodes to a Buffer first. Only for results whose columns are text or bytea.
   */
  async function query<R extends QueryResultRow>(what: string, text: string, values: unknown[], binary = false): Promise<R[]> {
    const label = `${description} ${what}`;
    if (closed) throw new StorageError(`${label}: storage is closed`, { code: 'ERR_STORAGE_CLOSED' });
    try {
      if (autoMigrate) await migrate();
      const p = await pool();
      // `query_timeout` per query (read by pg at run time, absent from its types)
      // makes pg drop the connection of a timed-out query instead of reusing it.
      const config = { text, values, query_timeout: timeoutMs, ...(binary ? { binary } : {}) };
      // Bounded on the server too: a statement we stopped waiting for is cancelled there (postgres-bounded.ts).
      const result = await boundedQuery<R>(p, config, timeoutMs, label, poolBoundsStatements(p, timeoutMs));
      return result.rows;
    } catch (error) {
      throw toStorageError(error, label);
    }
  }

  function heldLock(key: string, holder: string, ttl: number, fencingToken: number): StorageLock {
    let released = false;
    return {
      key,
      fencingToken,
      async renew() {
        if (released) throw new LockLostError(key);
        const rows = await query(`renew ${key}`, sql.renew, [key, holder, fencingToken, ttl]);
        if (rows.length !== 1) throw new LockLostError(key);
      },
      async release() {
        if (released) return;
        await query(`release ${key}`, sql.release, [key, holder, fencingToken]);
        released = true;
        waiters.wake(key);
      },
    };
  }

  const storage: PostgresStorage = {
    prepare: async () => {
      if (options.connectionString !== undefined) await loadDriver();
    },
    description,
    table,
    migrate,

    async load(key) {
      assertValidKey(key);
      const rows = await query<{ value: Buffer | string }>(`load ${key}`, sql.load, [key]);
      if (rows.length === 0) return undefined;
      const value = rows[0].value;
      return typeof value === 'string' ? value : value.toString('utf8');
    },

    async store(key, value, storeOptions?: StoreOptions) {
      assertValidKey(key);
      if (typeof value !== 'string') throw new TypeError('storage values are strings');
      const bytes = Buffer.from(value, 'utf8');
      const fence = storeOptions?.fence;
      if (!fence) {
        await query(`store ${key}`, sql.store, [key, bytes, encodeChange('store', key)]);
        return;
      }
      assertValidKey(fence.lockKey);
      if (!Number.isSafeInteger(fence.token)) throw new FencingError(fence.lockKey, fence.token);
      const rows = await query(`store ${key}`, sql.fencedStore, [key, bytes, encodeChange('store', key), fence.lockKey, String(fence.token)]);
      if (rows.length !== 1) throw new FencingError(fence.lockKey, fence.token);
    },

    async delete(key, deleteOptions?: DeleteOptions) {
      assertValidKey(key);
      const fence = deleteOptions?.fence;
      if (!fence) {
        await query(`delete ${key}`, sql.delete, [key, encodeChange('delete', key)]);
        return;
      }
      assertValidKey(fence.lockKey);
      if (!Number.isSafeInteger(fence.token)) throw new FencingError(fence.lockKey, fence.token);
      const rows = await query<{ fenced: number }>(`delete ${key}`, sql.fencedDelete, [key, encodeChange('delete', key), fence.lockKey, String(fence.token)]);
      if (Number(rows[0]?.fenced) !== 1) throw new FencingError(fence.lockKey, fence.token);
    },

    async now() {
      const rows = await query<{ now: number }>('now', sql.now, []);
      return Number(rows[0]!.now);
    },

    async list(prefix) {
      assertValidPrefix(prefix);
      const rows = await query<{ key: string }>(`list ${prefix}`, sql.list, [likePrefixPattern(prefix)]);
      return rows.map((row) => row.key);
    },

    /**
     * Keyset pages (see bulk-pages.ts), the next read while this one is worked
     * on: a page's keys and sizes first (no value read), cut at 1,000 keys or
     * {@link PAGE_BYTES} of values (at least one key), then the values of the
     * keys `only` wants, in binary format, with their versions. A start-up
     * that slept most names from the index reads a few values, not all, and
     * no page holds more than one hostile row past the byte bound.
     */
    entries(prefix, entriesOptions) {
      assertValidPrefix(prefix);
      const pattern = likePrefixPattern(prefix);
      const only = entriesOptions?.only;
      return keysetPages(async (after, limit) => {
        const listed = await query<{ key: string; size: string }>(`entries ${prefix}`, sql.keysAfter, [pattern, after, limit], true);
        let n = 0;
        for (let bytes = 0; n < listed.length; n++) {
          bytes += Number(listed[n]!.size);
          if (n > 0 && bytes > PAGE_BYTES) break;
        }
        const keys = listed.slice(0, n).map((row) => row.key);
        const wanted = only ? keys.filter((key) => only(key)) : keys;
        const rows = wanted.length === 0 ? [] : await query<{ key: string; value: string; version: string }>(`entries ${prefix}`, sql.entriesOf, [wanted], true);
        const next = n < listed.length ? keys[n - 1] : nextAfter(keys, limit);
        return { rows: rows.map((row) => [row.key, row.value, row.version] as const), next };
      });
    },

    startupIndex: postgresStartupIndex(query, sql, (prefix) => {
      assertValidPrefix(prefix);
      return likePrefixPattern(prefix);
    }),

    async stat(key): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const rows = await query<{ size: number; modified: number }>(`stat ${key}`, sql.stat, [key]);
      if (rows.length === 0) return undefined;
      return { size: Number(rows[0].size), modified: Number(rows[0].modified) };
    },

    async lock(key, ttlMs, lockOptions?: LockOptions) {
      assertValidKey(key);
      assertValidTtl(ttlMs);
      const ttl = Math.ceil(ttlMs);
      const holder = randomUUID();
      let pause = 5;
      const attempt = async (): Promise<Attempt<StorageLock>> => {
        let rows: { token: number | null; remaining_ms: number | null }[];
        try {
          rows = await query(`lock ${key}`, sql.acquire, [key, holder, ttl]);
        } catch (error) {
          // We gave up waiting, but the statement may still commit: cancel a lease nobody knows it holds.
          void query(`cancel lock ${key}`, sql.cancelAcquire, [key, holder]).catch(() => {});
          throw error;
        }
        const { token, remaining_ms: remaining } = rows[0];
        if (token !== null) return { lock: heldLock(key, holder, ttl, Number(token)) };
        // Polling (releases in this process wake waiters at once), growing and
        // jittered so that waiters of other processes do not stampede; never
        // sleeping much past the holder's expiry.
        pause = Math.min(pause * 2, maxPollMs);
        const jittered = pause / 2 + Math.random() * (pause / 2);
        return { retryInMs: remaining !== null && remaining > 0 ? Math.min(jittered, Math.ceil(remaining) + 1) : jittered };
      };
      // An aborted caller whose last attempt won gives the lock back rather than leak it for a whole TTL.
      const giveBack = (lock: StorageLock) => lock.release().catch(() => {});
      return acquireWithRetry(key, waiters, maxPollMs, attempt, giveBack, lockOptions?.signal);
    },

    async watch(prefix, onChange) {
      assertValidPrefix(prefix);
      if (closed) throw new StorageError(`${description} watch: storage is closed`, { code: 'ERR_STORAGE_CLOSED' });
      let p: Pool;
      try {
        p = await withDeadline(pool(), timeoutMs, `${description} watch`);
      } catch (error) {
        throw toStorageError(error, `${description} watch`);
      }
      // The channel is the table's name: distinct per storage, and already a validated identifier.
      const unwatch = await watchPostgres(p, { channel: table, prefix, onChange, timeoutMs });
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
      if (!ownsPool || poolPromise === undefined) return;
      const p = await poolPromise.catch(() => undefined);
      await p?.end().catch(() => {});
    },
  };
  return storage;
}

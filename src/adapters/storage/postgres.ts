/**
 * PostgreSQL storage: keyed blobs, leased locks and fencing tokens shared by
 * every process of a cluster through one database (`pg` pool).
 *
 * Two tables, created idempotently by {@link migratePostgres}:
 *
 * - `<table>`: `key` (primary key), `value`, `modified`;
 * - `<table>_locks`: one lease row per lock key: `holder` (random per
 *   acquisition), `fencing_token`, `expires_at`.
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
import { withDeadline } from './deadline.js';
import { randomUUID } from 'node:crypto';
import type { Notification, Pool, PoolClient, PoolConfig, QueryResultRow } from 'pg';
import { CertstateError, ConfigError, FencingError, LockLostError, StorageError } from '../../errors.js';
import { checkKeys, optionKeys } from '../../option-keys.js';
import { importOnce } from '../../import-once.js';
import type { DeleteOptions, LockOptions, Storage, StorageLock, StorageStat, StoreOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix } from './key.js';
import { encodeChange, decodeChange, guardWatcher, type ChannelWatchOptions, type Unwatch, type WatchableStorage } from './notify.js';
import { acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';

/** Options of {@link postgresStorage}. Give exactly one of `pool` or `connectionString`. */
export interface PostgresStorageOptions {
  /**
   * A `pg` Pool owned by the caller: certstate never ends it unless `ownsPool`
   * is true. Give it an `'error'` listener (as `pg` requires of every pool, or
   * an idle connection dropped by a server restart crashes the process) and a
   * `connectionTimeoutMillis`; every certstate call is bounded by
   * `operationTimeoutMs` regardless.
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

// ─── SQL ────────────────────────────────────────────────────────────────────

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,56}$/;

/** Validate a table name: it is spliced into SQL text, so only plain identifiers pass. */
function assertTableName(table: string): void {
  if (!IDENTIFIER.test(table)) {
    throw new ConfigError(`postgresStorage: table ${JSON.stringify(table)} must match ${IDENTIFIER} (lower-case SQL identifier)`);
  }
}

/**
 * The statements of one storage, for one (validated, quoted) table pair.
 *
 * `COLLATE "C"` on keys: byte order, so `key LIKE 'prefix%'` can use the
 * primary-key index whatever the database's default collation.
 * `value bytea`: holds any string exactly (a `text` column refuses U+0000).
 */
function statements(table: string) {
  const t = `"${table}"`;
  const l = `"${table}_locks"`;
  const ms = `* interval '1 millisecond'`;
  return {
    migrate: [
      `CREATE TABLE IF NOT EXISTS ${t} (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL,
        modified timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE IF NOT EXISTS ${l} (
        key text COLLATE "C" PRIMARY KEY,
        holder text NOT NULL,
        fencing_token bigint NOT NULL,
        expires_at timestamptz NOT NULL
      )`,
    ],
    load: `SELECT value FROM ${t} WHERE key = $1`,
    stat: `SELECT octet_length(value) AS size, floor(extract(epoch FROM modified) * 1000)::float8 AS modified FROM ${t} WHERE key = $1`,
    /** Upsert and announce it (`$3` the change payload); NOTIFY is delivered at commit, so never for a failed write. */
    store: `WITH written AS (
        INSERT INTO ${t} (key, value, modified) VALUES ($1, $2, now())
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified
        RETURNING key
      )
      SELECT pg_notify('${table}', $3) FROM written`,
    /**
     * One statement: check the fence and upsert. `FOR SHARE` locks the lease row
     * until we commit, so a concurrent take-over (an UPDATE of that row) waits
     * for our write to land first; and if a take-over committed before us,
     * READ COMMITTED re-checks `fencing_token` on its new version and we write
     * nothing. Either way a stale holder can never overwrite a newer write.
     */
    fencedStore: `WITH fence AS (
        SELECT 1 FROM ${l} WHERE key = $4 AND fencing_token = $5 FOR SHARE
      ), written AS (
        INSERT INTO ${t} (key, value, modified) SELECT $1, $2, now() FROM fence
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified
        RETURNING key
      )
      SELECT pg_notify('${table}', $3) FROM written`,
    delete: `WITH deleted AS (DELETE FROM ${t} WHERE key = $1 RETURNING key) SELECT pg_notify('${table}', $2) FROM deleted`,
    /** Like `fencedStore`: the lease row is share-locked, and nothing is deleted unless the token is current. */
    fencedDelete: `WITH fence AS (
        SELECT 1 FROM ${l} WHERE key = $3 AND fencing_token = $4 FOR SHARE
      ), deleted AS (
        DELETE FROM ${t} WHERE key = $1 AND EXISTS (SELECT 1 FROM fence) RETURNING key
      )
      SELECT (SELECT count(*) FROM fence)::int AS fenced, (SELECT count(pg_notify('${table}', $2)) FROM deleted)::int AS deleted`,
    now: `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now`,
    list: `SELECT key FROM ${t} WHERE key LIKE $1 ESCAPE '!'`,
    /**
     * Take the lease if the row is absent or its lease is over, drawing the next
     * fencing token in the same statement. The token is `max(previous + 1, the
     * database clock in µs)`: a lock row lost (restored from an older backup,
     * truncated, deleted) starts again above every token drawn before, so a
     * paused holder's old token never matches again; at 2^53 (JavaScript's
     * exact integers) it starts again from the clock. The outer SELECT reads
     * the snapshot from before the INSERT, so when busy it reports how long
     * the current holder's lease still runs (for the next poll); `greatest`
     * because a released row's `-infinity` cannot be subtracted.
     */
    acquire: `WITH acquired AS (
        INSERT INTO ${l} AS l (key, holder, fencing_token, expires_at)
        VALUES ($1, $2, (extract(epoch FROM now()) * 1000000)::bigint, now() + $3::float8 ${ms})
        ON CONFLICT (key) DO UPDATE
          SET holder = EXCLUDED.holder,
              fencing_token = CASE WHEN l.fencing_token >= 9007199254740990 THEN EXCLUDED.fencing_token
                                   ELSE greatest(l.fencing_token + 1, EXCLUDED.fencing_token) END,
              expires_at = EXCLUDED.expires_at
          WHERE l.expires_at <= now()
        RETURNING fencing_token
      )
      SELECT (SELECT fencing_token FROM acquired)::float8 AS token,
             (SELECT extract(epoch FROM greatest(expires_at, now()) - now()) * 1000 FROM ${l} WHERE key = $1)::float8 AS remaining_ms`,
    renew: `UPDATE ${l} SET expires_at = now() + $4::float8 ${ms}
      WHERE key = $1 AND holder = $2 AND fencing_token = $3 AND expires_at > now()
      RETURNING 1 AS renewed`,
    /** Expire, never delete: see the module comment. */
    release: `UPDATE ${l} SET expires_at = '-infinity' WHERE key = $1 AND holder = $2 AND fencing_token = $3`,
    /** Give up an acquisition whose answer never came: expire the lease if that holder got it after all. */
    cancelAcquire: `UPDATE ${l} SET expires_at = '-infinity' WHERE key = $1 AND holder = $2`,
  };
}

/** Escape `LIKE` wildcards with `!` (a character no key or prefix can hold) and append `%`. */
export function likePrefixPattern(prefix: string): string {
  return `${prefix.replace(/[!%_]/g, (c) => `!${c}`)}%`;
}

// ─── bounded calls ──────────────────────────────────────────────────────────


function toStorageError(error: unknown, what: string): unknown {
  if (error instanceof CertstateError) return error;
  const e = error as { message?: unknown; code?: unknown };
  const sqlState = typeof e?.code === 'string' ? ` (${e.code})` : '';
  const message = typeof e?.message === 'string' ? e.message : String(error);
  return new StorageError(`${what} failed: ${message}${sqlState}`, { cause: error });
}

/**
 * Create the tables of a PostgreSQL storage if they do not exist. Idempotent
 * and safe to run from many processes at once: concurrent `CREATE TABLE IF NOT
 * EXISTS` can still collide in the catalog, so it runs under a transaction-scoped
 * advisory lock.
 */
export async function migratePostgres(pool: Pool, options: { table?: string; timeoutMs?: number } = {}): Promise<void> {
  const table = options.table ?? 'certstate';
  assertTableName(table);
  const timeoutMs = options.timeoutMs ?? 5000;
  const what = `postgres:${table} migrate`;
  const connecting = pool.connect();
  let client: PoolClient;
  try {
    client = await withDeadline(connecting, timeoutMs, what);
  } catch (error) {
    // If the connection arrives after we gave up, hand it straight back.
    connecting.then((late) => late.release(), () => {});
    throw toStorageError(error, what);
  }
  let failure: unknown;
  try {
    await withDeadline(
      (async () => {
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`certstate-migrate:${table}`]);
        for (const sql of statements(table).migrate) await client.query(sql);
        await client.query('COMMIT');
      })(),
      timeoutMs,
      what,
    );
  } catch (error) {
    failure = error;
    throw toStorageError(error, what);
  } finally {
    // A failed or timed-out transaction leaves the connection in an unknown state: destroy it.
    client.release(failure === undefined ? undefined : (failure as Error));
  }
}

// ─── change notifications ──────────────────────────────────────────────────

/**
 * Watch a PostgreSQL `LISTEN` channel on one connection held from `pool` (a
 * pooled connection cannot be shared while it listens). If the connection
 * drops, it is destroyed and a new one is taken, with jittered backoff up to
 * 5 s, followed by a `resync`.
 */
async function watchPostgres(pool: Pool, options: ChannelWatchOptions): Promise<Unwatch> {
  const { channel, prefix, timeoutMs } = options;
  const deliver = guardWatcher(options.onChange);
  let current: PoolClient | undefined;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let failures = 0;

  const onNotification = (message: Notification) => {
    if (stopped || message.channel !== channel || message.payload === undefined) return;
    const change = decodeChange(message.payload);
    if (change && change.key.startsWith(prefix)) deliver(change);
  };

  async function listen(): Promise<void> {
    const what = `postgres watch ${channel}`;
    const connecting = pool.connect();
    let connection: PoolClient;
    try {
      connection = await withDeadline(connecting, timeoutMs, what);
    } catch (error) {
      connecting.then((late) => late.release(true), () => {});
      throw toStorageError(error, what);
    }
    // A held connection's 'error' must have a listener, or pg crashes the process when the server goes away.
    const lost = () => {
      if (current !== connection) return;
      current = undefined;
      connection.release(true);
      if (!stopped) retry();
    };
    connection.on('error', lost);
    connection.on('end', lost);
    connection.on('notification', onNotification);
    try {
      await withDeadline(connection.query(`LISTEN "${channel}"`), timeoutMs, what);
    } catch (error) {
      connection.removeListener('end', lost);
      connection.release(true);
      throw toStorageError(error, what);
    }
    current = connection;
  }

  function retry(): void {
    const pause = Math.min(100 * 2 ** failures, 5000) * (0.5 + Math.random() / 2);
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      listen().then(
        () => {
          failures = 0;
          if (stopped) void stop();
          else deliver({ type: 'resync' });
        },
        () => {
          failures++;
          if (!stopped) retry();
        },
      );
    }, pause);
  }

  async function stop(): Promise<void> {
    stopped = true;
    if (retryTimer) clearTimeout(retryTimer);
    const connection = current;
    current = undefined;
    // Destroyed, not returned: a pooled connection must not go back still LISTENing.
    connection?.release(true);
  }

  await listen();
  return stop;
}

// ─── the storage ────────────────────────────────────────────────────────────

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
const OPTION_KEYS = optionKeys<PostgresStorageOptions>({ pool: true, connectionString: true, poolConfig: true, ownsPool: true, table: true, autoMigrate: true, operationTimeoutMs: true, maxLockPollMs: true });

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

  /** One bounded query, after the migration, with every failure typed. */
  async function query<R extends QueryResultRow>(what: string, text: string, values: unknown[]): Promise<R[]> {
    const label = `${description} ${what}`;
    if (closed) throw new StorageError(`${label}: storage is closed`, { code: 'ERR_STORAGE_CLOSED' });
    try {
      if (autoMigrate) await migrate();
      const p = await pool();
      // `query_timeout` per query (read by pg at run time, absent from its types)
      // makes pg drop the connection of a timed-out query instead of reusing it.
      const config = { text, values, query_timeout: timeoutMs };
      const result = await withDeadline(p.query<R>(config), timeoutMs, label);
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

/**
 * The SQL of PostgreSQL storage, for one (validated, quoted) table pair, and
 * how a failed query is typed. Each statement is one atomic step: a fenced
 * write checks the lease row and writes in one statement, a lock acquisition
 * draws its fencing token in the same statement that takes the lease.
 */
import { CertstateError, ConfigError, StorageError } from '../../errors.js';

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,56}$/;

/** Validate a table name: it is spliced into SQL text, so only plain identifiers pass. */
export function assertTableName(table: string): void {
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
export function statements(table: string) {
  const t = `"${table}"`;
  const l = `"${table}_locks"`;
  const x = `"${table}_index"`;
  const ms = `* interval '1 millisecond'`;
  /** A row's version (postgres-index.ts): its row version's xmin and its `modified` in µs, as text. */
  const version = `xmin::text || '.' || floor(extract(epoch FROM modified) * 1000000)::bigint::text`;
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
      // The start-up index (postgres-index.ts): chunks of lines per generation; seq 0 marks a generation complete.
      `CREATE TABLE IF NOT EXISTS ${x} (
        gen bigint NOT NULL,
        seq integer NOT NULL,
        chunk bytea NOT NULL,
        PRIMARY KEY (gen, seq)
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
     * One page of the bulk read: keys after `$2` in key order (the column is COLLATE "C": byte order,
     * the primary key index), at most `$3`, with their values' sizes (from the TOAST header: no value
     * read); then the values of the keys wanted (`entriesOf`), each with its version.
     */
    keysAfter: `SELECT key, octet_length(value)::text AS size FROM ${t} WHERE key LIKE $1 ESCAPE '!' AND key > $2 ORDER BY key LIMIT $3`,
    entriesOf: `SELECT key, value, ${version} AS version FROM ${t} WHERE key = ANY($1::text[])`,
    /** A page of keys with their values' versions, no value read (the start-up index's check). */
    versions: `SELECT key, ${version} AS version FROM ${t} WHERE key LIKE $1 ESCAPE '!' AND key > $2 ORDER BY key LIMIT $3`,
    loadVersioned: `SELECT value, ${version} AS version FROM ${t} WHERE key = $1`,
    /** A new generation of the start-up index: the database clock in µs (bigint as text). */
    indexGeneration: `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS gen`,
    indexChunk: `INSERT INTO ${x} (gen, seq, chunk) VALUES ($1, $2, $3) ON CONFLICT (gen, seq) DO UPDATE SET chunk = EXCLUDED.chunk`,
    /** Mark generation `$1` complete and remove every older one (complete or cut short). */
    indexComplete: `WITH done AS (
        INSERT INTO ${x} (gen, seq, chunk) VALUES ($1, 0, '') ON CONFLICT (gen, seq) DO NOTHING
      )
      DELETE FROM ${x} WHERE gen < $1`,
    indexCurrent: `SELECT max(gen)::text AS gen FROM ${x} WHERE seq = 0`,
    /** The chunk after `$2` of generation `$1`; its bytes only if no more than `$3` (a larger one is refused unread). */
    indexRead: `SELECT seq, octet_length(chunk) AS size, CASE WHEN octet_length(chunk) <= $3::bigint THEN chunk END AS chunk
      FROM ${x} WHERE gen = $1 AND seq > $2 ORDER BY seq LIMIT 1`,
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

/**
 * SQL states that mean "a deadline passed": the server's `statement_timeout` (57014, which our
 * bounded queries always set, so a cancel is ours) and `idle_in_transaction_session_timeout` (25P03).
 */
const TIMEOUT_SQL_STATES = new Set(['57014', '25P03']);

/**
 * Any failure as a typed error: certstate's own errors pass through, a deadline passed on either
 * side becomes `ERR_STORAGE_TIMEOUT` (whichever of the server's and the client's timers fired
 * first, the caller sees the same code), the rest `StorageError` (with the SQL state).
 */
export function toStorageError(error: unknown, what: string): unknown {
  if (error instanceof CertstateError) return error;
  const e = error as { message?: unknown; code?: unknown };
  const sqlState = typeof e?.code === 'string' ? ` (${e.code})` : '';
  const message = typeof e?.message === 'string' ? e.message : String(error);
  // pg's own `query_timeout` rejects with this message and no code.
  const timedOut = (typeof e?.code === 'string' && TIMEOUT_SQL_STATES.has(e.code)) || message === 'Query read timeout';
  return new StorageError(`${what} failed: ${message}${sqlState}`, { cause: error, code: timedOut ? 'ERR_STORAGE_TIMEOUT' : undefined });
}

/** Creating PostgreSQL storage's tables: idempotent, safe from many processes at once. */
import type { Pool, PoolClient } from 'pg';
import { withDeadline } from './deadline.js';
import { serverBound } from './postgres-bounded.js';
import { assertTableName, statements, toStorageError } from './postgres-sql.js';

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
        // Cancelled by the server too if we give up (waiting for the advisory lock above all).
        await client.query(serverBound(timeoutMs));
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

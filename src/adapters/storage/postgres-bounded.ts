/**
 * One bounded statement of PostgreSQL storage, on both sides of the wire.
 *
 * The client-side deadline (`withDeadline`) only stops *waiting*: the
 * statement goes on in the server, still holding or waiting for row locks,
 * and may even commit a write the caller was told had failed. So every
 * statement also carries a server-side `statement_timeout`, which makes the
 * server cancel it (and roll it back) after the same time:
 *
 * - a pool whose config sets `statement_timeout` no longer than the deadline
 *   (the pool certstate creates from `connectionString` does) already bounds
 *   every statement: one round trip, as before;
 * - any other pool (a caller's) gets each statement inside a transaction that
 *   sets `statement_timeout` and `idle_in_transaction_session_timeout` with
 *   `SET LOCAL`, which ends with the transaction and so never changes the
 *   caller's connections. Two more round trips per call; a process frozen
 *   between its statement and `COMMIT` has its session ended by the server
 *   after the same time, so it cannot hold a lease row's lock either.
 */
import type { Pool, PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import { withDeadline } from './deadline.js';

/** Whether `pool`'s own connections bound every statement to at most `ms` (a `statement_timeout` in its config). */
export function poolBoundsStatements(pool: Pool, ms: number): boolean {
  const configured = (pool as { options?: { statement_timeout?: unknown } }).options?.statement_timeout;
  return typeof configured === 'number' && configured > 0 && configured <= ms;
}

/** The `SET LOCAL`s that bound a transaction's statements, and its idle time, to `ms` on the server. */
export function serverBound(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  return `SET LOCAL statement_timeout = ${whole}; SET LOCAL idle_in_transaction_session_timeout = ${whole}`;
}

/**
 * Run `config` within `ms`, the server cancelling it after `ms` too (see the
 * module comment). `config.query_timeout` should be `ms`: pg then drops the
 * connection of a statement that timed out instead of reusing it.
 */
export function boundedQuery<R extends QueryResultRow>(
  pool: Pool,
  config: QueryConfig & { query_timeout?: number },
  ms: number,
  label: string,
  serverBounded: boolean,
): Promise<QueryResult<R>> {
  if (serverBounded) return withDeadline(pool.query<R>(config), ms, label);
  let abandoned = false;
  const run = async (): Promise<QueryResult<R>> => {
    const client: PoolClient = await pool.connect();
    // A connection that arrives after the deadline must not run the statement late.
    if (abandoned) {
      client.release();
      throw new Error('abandoned');
    }
    try {
      await client.query({ text: `BEGIN; ${serverBound(ms)}`, query_timeout: ms } as QueryConfig);
      const result = await client.query<R>(config);
      await client.query({ text: 'COMMIT', query_timeout: ms } as QueryConfig);
      client.release();
      return result;
    } catch (error) {
      // Its transaction may still be open: destroyed, never handed back to the caller's pool.
      client.release(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  };
  return withDeadline(run(), ms, label).catch((error: unknown) => {
    abandoned = true;
    throw error;
  });
}

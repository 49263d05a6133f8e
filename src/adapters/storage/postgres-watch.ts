/** Change notifications of PostgreSQL storage: `LISTEN` on a connection held from the pool. */
import type { Notification, Pool, PoolClient } from 'pg';
import { withDeadline } from './deadline.js';
import { decodeChange, guardWatcher, type ChannelWatchOptions, type Unwatch } from './notify.js';
import { toStorageError } from './postgres-sql.js';

/**
 * Watch a PostgreSQL `LISTEN` channel on one connection held from `pool` (a
 * pooled connection cannot be shared while it listens). If the connection
 * drops, it is destroyed and a new one is taken, with jittered backoff up to
 * 5 s, followed by a `resync`.
 */
export async function watchPostgres(pool: Pool, options: ChannelWatchOptions): Promise<Unwatch> {
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

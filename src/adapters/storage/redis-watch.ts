/** Change notifications of Redis storage: a pub/sub channel on a connection of its own. */
import type { Redis } from 'ioredis';
import { withDeadline } from './deadline.js';
import { decodeChange, guardWatcher, type ChannelWatchOptions, type Unwatch } from './notify.js';
import { toStorageError } from './redis-scripts.js';

/**
 * Watch a Redis pub/sub channel on a dedicated connection (a subscribed
 * connection can run nothing else), duplicated from `client` so that it has the
 * same server, credentials and TLS. ioredis reconnects and re-subscribes by
 * itself; we only add the `resync` after it has.
 */
export async function watchRedis(client: Redis, options: ChannelWatchOptions): Promise<Unwatch> {
  const { channel, prefix, timeoutMs } = options;
  const deliver = guardWatcher(options.onChange);
  const subscriber = client.duplicate({ lazyConnect: true, connectionName: 'certstate-watch' });
  let listening = false;
  let stopped = false;
  // Failures show up as `resync` after recovery; without a listener ioredis would print each one.
  subscriber.on('error', () => {});
  subscriber.on('message', (from: string, payload: string) => {
    if (stopped || from !== channel) return;
    const change = decodeChange(payload);
    if (change && change.key.startsWith(prefix)) deliver(change);
  });
  subscriber.on('ready', () => {
    if (!listening || stopped) return;
    // A reconnection. SUBSCRIBE again (a no-op if ioredis already did) so that
    // `resync` is only sent once we are sure to hear what follows it.
    subscriber.subscribe(channel).then(
      () => {
        if (!stopped) deliver({ type: 'resync' });
      },
      () => {}, // the next 'ready' tries again
    );
  });
  try {
    // Connect first: with the caller's `enableOfflineQueue: false` a SUBSCRIBE sent while connecting would be refused.
    await withDeadline(
      subscriber.connect().then(() => subscriber.subscribe(channel)),
      timeoutMs,
      `redis watch ${channel}`,
    );
  } catch (error) {
    subscriber.disconnect();
    throw toStorageError(error, `redis watch ${channel}`);
  }
  listening = true;
  return async () => {
    if (stopped) return;
    stopped = true;
    subscriber.disconnect();
  };
}

/**
 * Bounded storage calls: a client that queues commands while disconnected
 * (ioredis' default) or a pool that waits for a connection for ever (pg
 * without `connectionTimeoutMillis`) must never hang a handshake.
 */
import { StorageError } from '../../errors.js';

/** Reject after `ms` with a `StorageError` (`ERR_STORAGE_TIMEOUT`), whatever the client's own settings. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new StorageError(`${what}: no answer within ${ms} ms`, { code: 'ERR_STORAGE_TIMEOUT' })), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

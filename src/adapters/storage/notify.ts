/**
 * Change notifications for clusters: a process learns that another one stored
 * or deleted a key (a renewed certificate, a new failure record) without
 * polling storage, so it can swap the certificate in (`STORAGE_CHANGED`).
 *
 * The writers announce their own writes, inside the write itself: Redis
 * storage `PUBLISH`es from the same Lua script that writes, PostgreSQL storage
 * calls `pg_notify` in the same statement (delivered at commit, never for a
 * rolled-back write). We do not use Redis keyspace notifications: they are off
 * by default (`notify-keyspace-events`) and a library must not reconfigure a
 * shared server.
 *
 * Notifications are hints, not a log: they are lost while a watcher is
 * disconnected. After every reconnection the watcher is therefore told
 * `{ type: 'resync' }`: "changes may have been missed; re-read what you hold".
 * A watcher also hears its own process's writes.
 */
import type { Storage } from '../../types.js';

/** What a watcher is told. */
export type StorageChange =
  /** `key` was written or deleted by some process sharing the storage (this one included). */
  | { type: 'store' | 'delete'; key: string }
  /** The watcher was disconnected and is listening again: changes may have been missed. */
  | { type: 'resync' };

/** Stop watching (idempotent). */
export type Unwatch = () => Promise<void>;

/**
 * A storage that can report changes. The proposed optional addition to
 * `Storage` in types.ts is exactly this `watch` method:
 *
 * ```ts
 * watch?(prefix: string, onChange: (change: StorageChange) => void): Promise<() => Promise<void>>;
 * ```
 */
export interface WatchableStorage extends Storage {
  /**
   * Call `onChange` for every change of a key starting with `prefix` (same
   * rules as `list`), and with `resync` after each reconnection. Resolves once
   * listening (rejects with `StorageError` if it cannot start); the returned
   * function stops watching. `onChange` must not throw; if it does, the error is
   * reported as a process warning and watching goes on.
   */
  watch(prefix: string, onChange: (change: StorageChange) => void): Promise<Unwatch>;
}

/** Whether `storage` offers `watch`. */
export function isWatchable(storage: Storage): storage is WatchableStorage {
  return typeof (storage as Partial<WatchableStorage>).watch === 'function';
}

// ─── wire format ────────────────────────────────────────────────────────────

/** The payload published for a change: `store:<key>` or `delete:<key>` (keys never contain `:`). */
export function encodeChange(type: 'store' | 'delete', key: string): string {
  return `${type}:${key}`;
}

/** Parse a payload of {@link encodeChange}; `undefined` for anything else (never trust a shared channel). */
export function decodeChange(payload: string): { type: 'store' | 'delete'; key: string } | undefined {
  const colon = payload.indexOf(':');
  const type = payload.slice(0, colon);
  if (colon < 0 || (type !== 'store' && type !== 'delete')) return undefined;
  return { type, key: payload.slice(colon + 1) };
}

// ─── shared plumbing ────────────────────────────────────────────────────────

/**
 * What a backend's watcher needs. The watchers themselves live in redis.ts and
 * postgres.ts, so that this module (and the types of either backend) never
 * pulls in the other's client library or its type declarations.
 */
export interface ChannelWatchOptions {
  /** The channel the storage publishes on. */
  channel: string;
  /** Only keys starting with this are reported. */
  prefix: string;
  /** Called for each change, and with `resync` after each reconnection. */
  onChange: (change: StorageChange) => void;
  /** Bound on starting to listen (and on each reconnection attempt). */
  timeoutMs: number;
}

/** Wrap a watcher so that its exception never breaks the connection's event handling (it becomes a process warning). */
export function guardWatcher(onChange: (change: StorageChange) => void): (change: StorageChange) => void {
  return (change) => {
    try {
      onChange(change);
    } catch (error) {
      process.emitWarning(`certstate storage watcher threw: ${error instanceof Error ? error.message : String(error)}`, 'CertstateWarning');
    }
  };
}

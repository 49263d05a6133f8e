/**
 * File storage: the default backend. One file per key under a root directory,
 * private to the user (dirs 0700, files 0600: the certificate unit holds a
 * private key), written atomically (temp file + fsync + rename + directory
 * fsync). Symbolic links under the root are never followed, for reads or
 * writes: every path component is lstat-ed and the last one opened with
 * O_NOFOLLOW (a link swapped in between the check and the use by someone who
 * can already write the 0700 root is out of scope).
 *
 * A key cannot be both a value and a directory of other keys (`a` and `a/b`):
 * the second write fails with `StorageError`. certstate's key layout never
 * does this.
 *
 * Locks work across processes sharing one local filesystem (one host; it must
 * support hard links; NFS is not supported): see file-lock.ts. Leases are
 * judged on the filesystem's clock, and fencing tokens survive the loss of
 * the lock directory.
 *
 * A fenced write is an atomic commit: the value is published as a version
 * named by its fencing token (`<key>~v/<token>`), and readers take the newest
 * version. A holder frozen at any point of its write (GC, SIGSTOP, a slow
 * disk) can land its version late, but never above a newer holder's: there is
 * no window between a check and a publish. An unfenced write replaces the
 * plain file and removes the versions.
 *
 * On-disk layout (`~` never occurs in a key, so nothing below can collide
 * with a stored key, and `list` skips every name holding it):
 *
 *   <root>/<key>                       a value (unfenced write)
 *   <root>/<key>~v/<token>             a fenced version; `<token>d` a fenced delete
 *   <root>/<dir>/<name>~tmp~<pid>-<r>  an in-flight (or crashed) write
 *   <root>/~locks/<lock key>~/<N>      lock generation N: {token, owner, ttlMs, pid, host, released?}
 */
import { constants, type Stats, watch as watchFs, type FSWatcher } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { CorruptStorageError, FencingError, StorageError } from '../../errors.js';
import type { DeleteOptions, Fence, LockOptions, StorageLock, StorageStat, StoreOptions, SweepOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix, isValidKey } from './key.js';
import { acquireWithRetry, assertValidTtl, LockWaiters } from './lock-wait.js';
import { DIR_MODE, TEMP_MARK, errorCode, filesystemNow, lstatOrUndefined, syncDir, wrap, writeAtomic } from './file-io.js';
import { assertFresh, tryLock, type FileLockContext } from './file-lock.js';
import { guardWatcher, type Unwatch, type WatchableStorage } from './notify.js';
import { sweepFileDebris } from './file-sweep.js';

/** Data directory used when none is given, relative to the working directory. */
export const DEFAULT_DATA_DIR = './certstate-data';

/** Options of `fileStorage`. */
export interface FileStorageOptions {
  /**
   * How often a waiting `lock()` looks at the lock again, in ms (default 25).
   * Another process's release is only noticed by polling.
   */
  pollIntervalMs?: number;
  /**
   * Fault injection for tests: called after the temp file is written and
   * synced, just before it is renamed over the target.
   * @internal
   */
  testHooks?: { beforeRename?(tempPath: string): void | Promise<void> };
}

const LOCKS_DIR = '~locks';
/** Suffix of a key's directory of fenced versions. */
const VERSIONS = '~v';
/** A version: its fencing token, and `d` for a fenced delete (a tombstone). */
const VERSION = /^([1-9][0-9]{0,15})(d?)$/;
/** Temp files older than this are debris of a crash, never a write in flight. */
const STALE_TEMP_MS = 60 * 60 * 1000;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Read the `size` bytes `fstat` reported (values are replaced by rename, so that is the file); stop early at end of file. */
async function readExactly(handle: fs.FileHandle, size: number): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(size);
  let filled = 0;
  while (filled < size) {
    const { bytesRead } = await handle.read(buffer, filled, size - filled, filled);
    if (bytesRead === 0) return buffer.subarray(0, filled);
    filled += bytesRead;
  }
  return buffer;
}

/** The newest version in a key's versions directory: its file name and whether it is a tombstone; undefined if none. */
async function newestVersion(versionsDir: string): Promise<{ name: string; token: number; deleted: boolean } | undefined> {
  let names: string[];
  try {
    names = await fs.readdir(versionsDir);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
  let newest: { name: string; token: number; deleted: boolean } | undefined;
  for (const name of names) {
    const match = VERSION.exec(name);
    if (!match) continue;
    const token = Number(match[1]);
    if (Number.isSafeInteger(token) && (!newest || token > newest.token)) newest = { name, token, deleted: match[2] === 'd' };
  }
  return newest;
}

/** Whether keys under directory key `dirKey` (ending in `/`) can start with `prefix`. */
function mayHold(dirKey: string, prefix: string): boolean {
  return dirKey.startsWith(prefix) || prefix.startsWith(dirKey);
}

/**
 * Create a file `Storage` rooted at `dir` (default `./certstate-data`),
 * described as `file:<absolute dir>`. Directories it creates are 0700 and
 * every file 0600. Locks exclude other processes using the same directory on
 * the same host (the filesystem must support hard links), and `watch()`
 * reports writes made by any of them (inotify).
 */
export function fileStorage(dir: string = DEFAULT_DATA_DIR, options: FileStorageOptions = {}): WatchableStorage {
  const root = path.resolve(dir);
  const rootPrefix = root.endsWith(path.sep) ? root : root + path.sep;
  const pollMs = options.pollIntervalMs ?? 25;
  const hooks = options.testHooks;
  const waiters = new LockWaiters();
  const lastSweep = new Map<string, number>();

  /** Absolute path of a (validated) key, proven to lie inside the root. */
  function pathOf(key: string): string {
    const resolved = path.resolve(root, ...key.split('/'));
    if (!resolved.startsWith(rootPrefix)) throw new StorageError(`file storage: key ${key} resolves outside ${root}`);
    return resolved;
  }

  async function ensureRoot(): Promise<void> {
    const first = await fs.mkdir(root, { recursive: true, mode: DIR_MODE });
    if (first === undefined) return; // existed: the operator's directory, left as it is
    // mkdir's mode is filtered by the umask: set it exactly on every directory made.
    let current = first;
    await fs.chmod(current, DIR_MODE);
    for (const segment of path.relative(first, root).split(path.sep).filter(Boolean)) {
      current = path.join(current, segment);
      await fs.chmod(current, DIR_MODE);
    }
  }

  /**
   * Walk from the root down to `dir` with lstat, refusing symbolic links, so
   * that no read or write can be redirected outside the root. With `create`,
   * make missing directories (0700) and refuse non-directories; without, report
   * false when the path cannot exist (a component missing or a plain file).
   */
  async function checkDirs(dir: string, create: boolean): Promise<boolean> {
    let current = root;
    for (const segment of path.relative(root, dir).split(path.sep).filter(Boolean)) {
      current = path.join(current, segment);
      let stats = await lstatOrUndefined(current);
      if (!stats) {
        if (!create) return false;
        try {
          await fs.mkdir(current, { mode: DIR_MODE });
          await fs.chmod(current, DIR_MODE); // mkdir's mode is filtered by the umask
          continue;
        } catch (error) {
          if (errorCode(error) !== 'EEXIST') throw error; // a concurrent writer made it: check it
          stats = await fs.lstat(current);
        }
      }
      if (stats.isSymbolicLink()) throw new StorageError(`file storage: refusing to write through symbolic link ${current}`);
      if (!stats.isDirectory()) {
        if (!create) return false;
        throw new StorageError(`file storage: ${current} is not a directory`);
      }
    }
    return true;
  }

  /** Refuse to replace a symbolic link or a non-file at `file`. */
  async function checkLeaf(file: string): Promise<void> {
    const stats = await lstatOrUndefined(file);
    if (stats?.isSymbolicLink()) throw new StorageError(`file storage: refusing to write through symbolic link ${file}`);
    if (stats && !stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
  }

  /**
   * Remove crash debris (temp files older than an hour) from `dir`, at most
   * once an hour per directory per instance so that writes stay cheap.
   */
  async function sweepTemps(dir: string): Promise<void> {
    const now = Date.now();
    if ((lastSweep.get(dir) ?? 0) > now - STALE_TEMP_MS) return;
    if (lastSweep.size >= 10_000) lastSweep.clear(); // bounded memory; forgetting only costs a readdir
    lastSweep.set(dir, now);
    try {
      for (const name of await fs.readdir(dir)) {
        if (!name.includes(TEMP_MARK)) continue;
        const file = path.join(dir, name);
        const stats = await lstatOrUndefined(file);
        if (stats?.isFile() && stats.mtimeMs < now - STALE_TEMP_MS) await fs.unlink(file).catch(() => {});
      }
    } catch {
      // Best effort: debris is harmless (never listed, never read).
    }
  }

  const locks: FileLockContext = {
    waiters,
    async lockDir(key, create) {
      // `~` keeps lock directories apart from keys and from each other.
      const lockDir = path.join(root, LOCKS_DIR, `${key}~`);
      if (create) {
        await ensureRoot();
        await checkDirs(lockDir, true);
        await sweepTemps(lockDir);
        return lockDir;
      }
      return (await checkDirs(lockDir, false)) ? lockDir : undefined;
    },
  };

  /**
   * Where `key`'s current value is: its newest fenced version (a tombstone
   * means deleted), else the plain file. Fenced versions win over the plain
   * file: an unfenced write removes the versions (see `store`).
   */
  async function resolve(file: string): Promise<{ path: string } | { deleted: true }> {
    const versionsDir = file + VERSIONS;
    const stats = await lstatOrUndefined(versionsDir);
    if (stats?.isSymbolicLink()) throw new StorageError(`file storage: refusing to read symbolic link ${versionsDir}`);
    const newest = stats?.isDirectory() ? await newestVersion(versionsDir) : undefined;
    if (!newest) return { path: file };
    return newest.deleted ? { deleted: true } : { path: path.join(versionsDir, newest.name) };
  }

  /** Read one value file; undefined when absent. */
  async function readValue(key: string, file: string): Promise<string | undefined> {
    let handle: fs.FileHandle;
    try {
      // O_NOFOLLOW: a symlink planted at the key is refused, not read.
      // O_NONBLOCK: a FIFO planted at the key must not hang the read.
      handle = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      if (code === 'ELOOP') throw new StorageError(`file storage: refusing to read symbolic link ${file}`, { cause: error });
      wrap('read', file, error);
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
      // Values are replaced by rename, never rewritten in place: the size just read is the
      // file's. One read of that size, not readFile's own fstat and read loop (start-up
      // reads every stored certificate: each thread-pool round trip counts).
      const bytes = await readExactly(handle, stats.size);
      try {
        return utf8.decode(bytes);
      } catch (error) {
        throw new CorruptStorageError(key, `${file} is not valid UTF-8`, error);
      }
    } catch (error) {
      wrap('read', file, error);
    } finally {
      await handle.close().catch(() => {});
    }
  }

  /**
   * The atomic fenced commit: publish the value as version `<token>` in the
   * key's versions directory, where readers take the newest version. There is
   * no window between a check and a publish to lose: a stale holder's version
   * can never hide a newer holder's, whenever it lands. The lock is checked
   * first (a holder that lost it is refused at once, like the other
   * storages), and a version that lands under a newer one is withdrawn and
   * refused. `data` undefined publishes a tombstone (a fenced delete).
   */
  async function commitFenced(file: string, fence: Fence, data: string | undefined): Promise<void> {
    const versionsDir = file + VERSIONS;
    await ensureRoot();
    await checkDirs(versionsDir, true);
    await assertFresh(locks, fence);
    const name = data === undefined ? `${fence.token}d` : String(fence.token);
    const target = path.join(versionsDir, name);
    await checkLeaf(target);
    await writeAtomic(target, data ?? '', (temp) => hooks?.beforeRename?.(temp));
    const newest = await newestVersion(versionsDir);
    if (newest && newest.token > fence.token) {
      await fs.unlink(target).catch(() => {});
      throw new FencingError(fence.lockKey, fence.token);
    }
    const others = (await fs.readdir(versionsDir)).filter((n) => n !== name && VERSION.test(n));
    for (const old of others) {
      if (Number(VERSION.exec(old)![1]) <= fence.token) await fs.unlink(path.join(versionsDir, old)).catch(() => {});
    }
    // Touch the versions directory: an inotify watcher of the parent hears of the new version.
    const now = new Date();
    await fs.utimes(versionsDir, now, now).catch(() => {});
    await sweepTemps(versionsDir);
  }

  /** Remove a key's fenced versions (after an unfenced write or delete, which then win). */
  async function dropVersions(file: string): Promise<void> {
    const versionsDir = file + VERSIONS;
    const stats = await lstatOrUndefined(versionsDir);
    if (!stats) return;
    if (!stats.isDirectory()) throw new StorageError(`file storage: ${versionsDir} is not a directory`);
    await fs.rm(versionsDir, { recursive: true, force: true });
  }

  /** The directory `watch(prefix)` listens on: the deepest complete directory of the prefix. */
  function watchedDir(prefix: string): { dir: string; dirKey: string } {
    const dirKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    return { dir: dirKey ? pathOf(dirKey.slice(0, -1)) : root, dirKey };
  }

  return {
    description: `file:${root}`,

    async load(key: string): Promise<string | undefined> {
      assertValidKey(key);
      const file = pathOf(key);
      try {
        if (!(await checkDirs(path.dirname(file), false))) return undefined;
      } catch (error) {
        wrap('read', file, error);
      }
      // A version may be cleaned up between finding and reading it: find again.
      for (let tries = 0; ; tries++) {
        let where: Awaited<ReturnType<typeof resolve>>;
        try {
          where = await resolve(file);
        } catch (error) {
          wrap('read', file, error);
        }
        if ('deleted' in where) return undefined;
        const value = await readValue(key, where.path);
        if (value !== undefined || where.path === file || tries >= 3) return value;
      }
    },

    async store(key: string, value: string, storeOptions?: StoreOptions): Promise<void> {
      assertValidKey(key);
      const fence = storeOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const file = pathOf(key);
      try {
        await ensureRoot();
        await checkDirs(path.dirname(file), true);
        if (fence) return await commitFenced(file, fence, value);
        await checkLeaf(file);
        await writeAtomic(file, value, (temp) => hooks?.beforeRename?.(temp));
        await dropVersions(file);
      } catch (error) {
        wrap('write', file, error);
      }
      await sweepTemps(path.dirname(file));
    },

    async delete(key: string, deleteOptions?: DeleteOptions): Promise<void> {
      assertValidKey(key);
      const fence = deleteOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const file = pathOf(key);
      try {
        if (fence) return await commitFenced(file, fence, undefined);
        if (!(await checkDirs(path.dirname(file), false))) return;
        await dropVersions(file);
        await fs.unlink(file);
        await syncDir(path.dirname(file));
      } catch (error) {
        if (errorCode(error) === 'ENOENT') return;
        wrap('delete', file, error);
      }
    },

    async list(prefix: string): Promise<string[]> {
      assertValidPrefix(prefix);
      const dirKey = prefix.slice(0, prefix.lastIndexOf('/') + 1); // complete segments only
      const keys = new Set<string>();
      const walk = async (dirPath: string, keyPrefix: string): Promise<void> => {
        let entries;
        try {
          entries = await fs.readdir(dirPath, { withFileTypes: true });
        } catch (error) {
          const code = errorCode(error);
          if (code === 'ENOENT' || code === 'ENOTDIR') return;
          wrap('list', dirPath, error);
        }
        for (const entry of entries) {
          // A key's fenced versions: listed as the key unless its newest version is a tombstone.
          if (entry.isDirectory() && entry.name.endsWith(VERSIONS)) {
            const key = keyPrefix + entry.name.slice(0, -VERSIONS.length);
            if (!isValidKey(key) || !key.startsWith(prefix)) continue;
            const newest = await newestVersion(path.join(dirPath, entry.name));
            if (newest && !newest.deleted) keys.add(key);
            else if (newest?.deleted) keys.delete(key);
            continue;
          }
          const key = keyPrefix + entry.name;
          // Skips temp files and the lock tree (their names hold `~`) and foreign names.
          if (!isValidKey(key)) continue;
          if (entry.isFile() && key.startsWith(prefix)) {
            // A plain file hidden by a tombstone version is not listed.
            const where = await resolve(path.join(dirPath, entry.name)).catch(() => undefined);
            if (where && !('deleted' in where)) keys.add(key);
          } else if (entry.isDirectory() && mayHold(`${key}/`, prefix)) {
            await walk(path.join(dirPath, entry.name), `${key}/`);
          }
        }
      };
      const start = dirKey ? pathOf(dirKey.slice(0, -1)) : root;
      try {
        if (!(await checkDirs(start, false))) return [];
      } catch (error) {
        wrap('list', start, error);
      }
      await walk(start, dirKey);
      return [...keys];
    },

    async stat(key: string): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const file = pathOf(key);
      let stats: Stats | undefined;
      try {
        if (!(await checkDirs(path.dirname(file), false))) return undefined;
        const where = await resolve(file);
        if ('deleted' in where) return undefined;
        stats = await lstatOrUndefined(where.path);
      } catch (error) {
        wrap('stat', file, error);
      }
      if (!stats) return undefined;
      if (stats.isSymbolicLink()) throw new StorageError(`file storage: refusing to read symbolic link ${file}`);
      if (!stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
      return { size: stats.size, modified: Math.trunc(stats.mtimeMs) };
    },

    async lock(key: string, ttlMs: number, lockOptions?: LockOptions): Promise<StorageLock> {
      assertValidKey(key);
      assertValidTtl(ttlMs);
      const attempt = async () => {
        try {
          return await tryLock(locks, key, ttlMs);
        } catch (error) {
          wrap('lock', key, error);
        }
      };
      return acquireWithRetry(key, waiters, pollMs, attempt, (lock) => lock.release(), lockOptions?.signal);
    },

    /** Temp files of crashed writes and directories of dead locks (see file-sweep.ts). */
    sweep: (sweepOptions: SweepOptions) => sweepFileDebris(root, { tempMark: TEMP_MARK, locksDir: LOCKS_DIR, staleTempMs: STALE_TEMP_MS }, sweepOptions),

    async now(): Promise<number> {
      try {
        await ensureRoot();
        return Math.trunc(await filesystemNow(root));
      } catch (error) {
        wrap('read the clock of', root, error);
      }
    },

    /**
     * Changes by any process on this host, from inotify (`fs.watch`) on the
     * prefix's directory: a plain write renames into it, a fenced one touches
     * the key's versions directory in it. Only keys directly in that directory
     * are reported. If the watch breaks, it is set up again and `resync` told.
     */
    async watch(prefix, onChange): Promise<Unwatch> {
      assertValidPrefix(prefix);
      const deliver = guardWatcher(onChange);
      const { dir, dirKey } = watchedDir(prefix);
      try {
        await ensureRoot();
        await checkDirs(dir, true);
      } catch (error) {
        wrap('watch', dir, error);
      }
      let watcher: FSWatcher | undefined;
      let stopped = false;
      let retry: NodeJS.Timeout | undefined;
      const start = (): void => {
        watcher = watchFs(dir, { persistent: false }, (_event, filename) => {
          if (stopped || typeof filename !== 'string') return;
          const name = filename.endsWith(VERSIONS) ? filename.slice(0, -VERSIONS.length) : filename;
          const key = dirKey + name;
          if (isValidKey(key) && key.startsWith(prefix)) deliver({ type: 'store', key });
        });
        watcher.on('error', () => {
          watcher?.close();
          if (stopped) return;
          retry = setTimeout(() => {
            if (stopped) return;
            try {
              start();
              deliver({ type: 'resync' });
            } catch {
              watcher?.emit('error', new Error('watch failed'));
            }
          }, 1000);
        });
      };
      try {
        start();
      } catch (error) {
        wrap('watch', dir, error);
      }
      return async () => {
        stopped = true;
        if (retry) clearTimeout(retry);
        watcher?.close();
      };
    },
  };
}

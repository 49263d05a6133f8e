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
 *   <root>/~index/startup              the engine's start-up index (file-index.ts)
 *
 * This module composes the parts, each with one job: file-tree.ts (paths kept
 * inside the root), file-io.ts (atomic filesystem steps, the filesystem's
 * clock), file-versions.ts (the fenced commit), file-lock.ts (leases and
 * tokens), file-watch.ts (inotify), file-sweep.ts (debris), file-index.ts
 * (the engine's start-up index, `<root>/~index/startup`, and the versions of values).
 */
import { fileEntries } from './file-bulk.js';
import type { Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../../errors.js';
import type { DeleteOptions, EntriesOptions, LockOptions, StorageLock, StorageStat, StoreOptions, SweepOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix, isValidKey } from './key.js';
import { acquireWithRetry, assertValidTtl, LockWaiters } from './lock-wait.js';
import { TEMP_MARK, errorCode, filesystemNow, lstatOrUndefined, readValue, readValueVersioned, syncDir, wrap, writeAtomic } from './file-io.js';
import { fileVersions, readIndexLines, writeIndexLines } from './file-index.js';
import { tryLock, type FileLockContext } from './file-lock.js';
import { fileTree, STALE_TEMP_MS } from './file-tree.js';
import { commitFenced, dropVersions, newestVersion, resolveVersion, VERSIONS, type CommitContext } from './file-versions.js';
import { watchFileTree } from './file-watch.js';
import type { Unwatch, WatchableStorage } from './notify.js';
import { sweepFileDebris } from './file-sweep.js';
import { mayHold, walkStart } from './file-walk.js';

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

/**
 * Create a file `Storage` rooted at `dir` (default `./certstate-data`),
 * described as `file:<absolute dir>`. Directories it creates are 0700 and
 * every file 0600. Locks exclude other processes using the same directory on
 * the same host (the filesystem must support hard links), and `watch()`
 * reports writes made by any of them (inotify).
 */
export function fileStorage(dir: string = DEFAULT_DATA_DIR, options: FileStorageOptions = {}): WatchableStorage {
  const tree = fileTree(path.resolve(dir));
  const root = tree.root;
  const pollMs = options.pollIntervalMs ?? 25;
  const hooks = options.testHooks;
  const waiters = new LockWaiters();

  const locks: FileLockContext = {
    waiters,
    async lockDir(key, create) {
      // `~` keeps lock directories apart from keys and from each other.
      const lockDir = path.join(root, LOCKS_DIR, `${key}~`);
      if (create) {
        await tree.ensureRoot();
        await tree.checkDirs(lockDir, true);
        await tree.sweepTemps(lockDir);
        return lockDir;
      }
      return (await tree.checkDirs(lockDir, false)) ? lockDir : undefined;
    },
  };
  const commit: CommitContext = { tree, locks, beforeRename: (temp) => hooks?.beforeRename?.(temp) };

  /** A key's value (its newest fenced version, else the plain file), with its version when asked. */
  async function loadAt(key: string, versioned: boolean): Promise<{ value: string; version?: string } | undefined> {
    assertValidKey(key);
    const file = tree.pathOf(key);
    try {
      if (!(await tree.checkDirs(path.dirname(file), false))) return undefined;
    } catch (error) {
      wrap('read', file, error);
    }
    // A version may be cleaned up between finding and reading it: find again.
    for (let tries = 0; ; tries++) {
      let where: Awaited<ReturnType<typeof resolveVersion>>;
      try {
        where = await resolveVersion(file);
      } catch (error) {
        wrap('read', file, error);
      }
      if ('deleted' in where) return undefined;
      const read = versioned ? await readValueVersioned(key, where.path) : await readValue(key, where.path);
      if (read !== undefined || where.path === file || tries >= 3) return read;
    }
  }
  const loadVersioned = (key: string) => loadAt(key, true) as Promise<{ value: string; version: string } | undefined>;

  return {
    description: `file:${root}`,

    async load(key: string): Promise<string | undefined> {
      return (await loadAt(key, false))?.value;
    },

    async store(key: string, value: string, storeOptions?: StoreOptions): Promise<void> {
      assertValidKey(key);
      const fence = storeOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const file = tree.pathOf(key);
      try {
        await tree.ensureRoot();
        await tree.checkDirs(path.dirname(file), true);
        if (fence) return await commitFenced(commit, file, fence, value);
        await tree.checkLeaf(file);
        await writeAtomic(file, value, (temp) => hooks?.beforeRename?.(temp));
        await dropVersions(file);
      } catch (error) {
        wrap('write', file, error);
      }
      await tree.sweepTemps(path.dirname(file));
    },

    async delete(key: string, deleteOptions?: DeleteOptions): Promise<void> {
      assertValidKey(key);
      const fence = deleteOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const file = tree.pathOf(key);
      try {
        if (fence) return await commitFenced(commit, file, fence, undefined);
        if (!(await tree.checkDirs(path.dirname(file), false))) return;
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
        // Plain files without a versions directory beside them (nearly all) are listed as they are:
        // no look for a versions directory per file (at a million names, a million failed lstats).
        const versioned = new Set(entries.filter((e) => e.name.endsWith(VERSIONS)).map((e) => e.name.slice(0, -VERSIONS.length)));
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
            if (!versioned.has(entry.name)) {
              keys.add(key);
              continue;
            }
            const where = await resolveVersion(path.join(dirPath, entry.name)).catch(() => undefined);
            if (where && !('deleted' in where)) keys.add(key);
          } else if (entry.isDirectory() && mayHold(`${key}/`, prefix)) {
            await walk(path.join(dirPath, entry.name), `${key}/`);
          }
        }
      };
      const first = await walkStart(tree, prefix);
      if (!first) return [];
      await walk(first.dir, first.keyPrefix);
      return [...keys];
    },

    /** One listing, reads 64 at a time, each value with its version (see file-bulk.ts). */
    entries(prefix: string, entriesOptions?: EntriesOptions) {
      assertValidPrefix(prefix);
      return fileEntries(tree, prefix, loadVersioned, entriesOptions?.only);
    },

    /** The engine's start-up index and the versions of values (see file-index.ts). */
    startupIndex: {
      read: (maxBytes) => readIndexLines(tree, maxBytes),
      write: (lines) => writeIndexLines(tree, lines),
      versions(prefix) {
        assertValidPrefix(prefix);
        return fileVersions(tree, prefix);
      },
      loadVersioned,
    },

    async stat(key: string): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const file = tree.pathOf(key);
      let stats: Stats | undefined;
      try {
        if (!(await tree.checkDirs(path.dirname(file), false))) return undefined;
        const where = await resolveVersion(file);
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

    /** Temp files of crashed writes, directories of dead locks, old tombstones (see file-sweep.ts). */
    sweep: (sweepOptions: SweepOptions) => sweepFileDebris(root, { tempMark: TEMP_MARK, locksDir: LOCKS_DIR, staleTempMs: STALE_TEMP_MS, versionsSuffix: VERSIONS }, sweepOptions),

    async now(): Promise<number> {
      try {
        await tree.ensureRoot();
        return Math.trunc(await filesystemNow(root));
      } catch (error) {
        wrap('read the clock of', root, error);
      }
    },

    /** Changes by any process on this host, from inotify (see file-watch.ts). */
    async watch(prefix, onChange): Promise<Unwatch> {
      assertValidPrefix(prefix);
      return watchFileTree(tree, prefix, onChange);
    },
  };
}

/**
 * The directory tree of file storage, kept inside its root: every key's path
 * is proven to lie under the root, every directory on the way is lstat-ed
 * (symbolic links refused, for reads and writes), directories are made 0700
 * exactly (whatever the umask), and crash debris (old temp files) is swept
 * from a directory as writes pass through it.
 */
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../../errors.js';
import { DIR_MODE, TEMP_MARK, errorCode, lstatOrUndefined } from './file-io.js';

/** Temp files older than this are debris of a crash, never a write in flight. */
export const STALE_TEMP_MS = 60 * 60 * 1000;

/** Path checks and directory creation under one root (see the module comment). */
export interface FileTree {
  /** The absolute root directory. */
  readonly root: string;
  /** Absolute path of a (validated) key, proven to lie inside the root. */
  pathOf(key: string): string;
  /** Create the root (0700 on every directory made) if it is missing. */
  ensureRoot(): Promise<void>;
  /**
   * Walk from the root down to `dir` with lstat, refusing symbolic links. With
   * `create`, make missing directories (0700) and refuse non-directories;
   * without, report false when the path cannot exist.
   */
  checkDirs(dir: string, create: boolean): Promise<boolean>;
  /** Refuse to replace a symbolic link or a non-file at `file`. */
  checkLeaf(file: string): Promise<void>;
  /** Remove temp files older than an hour from `dir`, at most once an hour per directory. */
  sweepTemps(dir: string): Promise<void>;
}

/** The tree of file storage rooted at `root` (an absolute path). */
export function fileTree(root: string): FileTree {
  const rootPrefix = root.endsWith(path.sep) ? root : root + path.sep;
  const lastSweep = new Map<string, number>();

  return {
    root,

    pathOf(key) {
      const resolved = path.resolve(root, ...key.split('/'));
      if (!resolved.startsWith(rootPrefix)) throw new StorageError(`file storage: key ${key} resolves outside ${root}`);
      return resolved;
    },

    async ensureRoot() {
      const first = await fs.mkdir(root, { recursive: true, mode: DIR_MODE });
      if (first === undefined) return; // existed: the operator's directory, left as it is
      // mkdir's mode is filtered by the umask: set it exactly on every directory made.
      let current = first;
      await fs.chmod(current, DIR_MODE);
      for (const segment of path.relative(first, root).split(path.sep).filter(Boolean)) {
        current = path.join(current, segment);
        await fs.chmod(current, DIR_MODE);
      }
    },

    async checkDirs(dir, create) {
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
    },

    async checkLeaf(file) {
      const stats = await lstatOrUndefined(file);
      if (stats?.isSymbolicLink()) throw new StorageError(`file storage: refusing to write through symbolic link ${file}`);
      if (stats && !stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
    },

    async sweepTemps(dir) {
      // At most once an hour per directory per instance, so that writes stay cheap.
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
    },
  };
}

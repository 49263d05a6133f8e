/**
 * File storage's own debris, which no key names and `list` never shows:
 * temp files of writes that crashed before their rename, and the lock
 * directories of locks nobody holds any more (one per name ever issued for:
 * on a host whose names churn, they would pile up for ever).
 *
 * What goes, judged by the file's modification time and the lock record:
 * - a temp file (`…~tmp~…`) last written before `before` and over `staleTempMs`
 *   ago (a write in flight is never that old);
 * - a lock directory (`~locks/<key>~/`) whose newest generation was last
 *   written before `before` and is released, or whose lease has run out.
 *   Its generations go with it. A process taking that very lock in the same
 *   instant sees its directory vanish and gets a `StorageError` once (it
 *   retries); the fencing token it then draws starts a new count, which is
 *   safe as long as no holder stays frozen longer than the sweep's age;
 * - the versions directory (`<key>~v/`) of a key deleted by a fenced delete
 *   whose tombstone was written before `before`: the value the tombstone
 *   hides goes first (only if older than the tombstone, so an unfenced write
 *   in flight is never lost), then the tombstone, then the directory. A
 *   tombstone keeps a stale holder's late, older version from resurrecting
 *   the key; past the sweep's age that is the same bet as for lock
 *   directories. Without this, every name ever validated by TLS-ALPN-01 (and
 *   every key ever deleted fenced) would leave a directory for ever. An empty
 *   versions directory (a write that failed before publishing) goes too.
 *
 * Symbolic links are never followed; directories are read as streams, so a
 * million certificates cost no million-entry array.
 */
import type { Dir, Dirent } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import type { SweepOptions, SweepResult } from '../../types.js';
import { parseVersion } from './file-versions.js';

/** The names file storage gives its debris. */
export interface FileDebrisLayout {
  /** Marks temp files (`<name><tempMark><pid>-<random>`). */
  tempMark: string;
  /** The directory of lock trees under the root. */
  locksDir: string;
  /** A temp file younger than this may be a write in flight. */
  staleTempMs: number;
  /** Suffix of a key's directory of fenced versions. */
  versionsSuffix: string;
}

const GENERATION = /^[1-9][0-9]{0,15}$/;

/** Remove the debris under `root` that `options.before` and the rules above allow. */
export async function sweepFileDebris(root: string, layout: FileDebrisLayout, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, bytes: 0 };
  const now = Date.now();
  const tempBefore = Math.min(options.before, now - layout.staleTempMs);
  const stopped = () => options.signal?.aborted === true;

  const unlink = async (file: string, size: number) => {
    try {
      await fs.unlink(file);
      result.removed++;
      result.bytes += size;
    } catch {
      // gone already, or not ours to remove: debris is harmless, the next sweep looks again
    }
  };

  const removeIfStaleTemp = async (file: string) => {
    const stats = await fs.lstat(file).catch(() => undefined);
    if (stats?.isFile() && stats.mtimeMs < tempBefore) await unlink(file, stats.size);
  };

  /** Whether the lock whose newest generation is `file` is free (released, or its lease ran out) and idle since before `before`. */
  const lockIsDead = async (file: string): Promise<boolean> => {
    const stats = await fs.lstat(file).catch(() => undefined);
    if (!stats?.isFile() || stats.mtimeMs >= options.before) return false;
    let record: { released?: unknown; expiresAt?: unknown; ttlMs?: unknown } | undefined;
    try {
      record = JSON.parse(await fs.readFile(file, 'utf8')) as typeof record;
    } catch {
      record = undefined;
    }
    if (!record || typeof record !== 'object') return stats.mtimeMs < now - layout.staleTempMs;
    if (record.released === true) return true;
    if (typeof record.expiresAt === 'number') return record.expiresAt <= now;
    if (typeof record.ttlMs === 'number') return stats.mtimeMs + record.ttlMs <= now;
    return stats.mtimeMs < now - layout.staleTempMs;
  };

  const sweepLockDir = async (dir: string) => {
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    const newest = names.filter((n) => GENERATION.test(n)).sort((a, b) => Number(a) - Number(b)).at(-1);
    if (newest === undefined) {
      for (const name of names) if (name.includes(layout.tempMark)) await removeIfStaleTemp(path.join(dir, name));
    } else {
      if (!(await lockIsDead(path.join(dir, newest)))) return;
      for (const name of names) {
        const file = path.join(dir, name);
        const stats = await fs.lstat(file).catch(() => undefined);
        if (stats?.isFile()) await unlink(file, stats.size);
      }
    }
    // Fails (not empty) when someone took the lock meanwhile: then it stays.
    await fs.rmdir(dir).then(() => void result.removed++, () => {});
  };

  /** Compact a key's versions directory whose newest version is an old tombstone (see the module comment). */
  const compactVersions = async (dir: string) => {
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    let newest: { name: string; token: number; deleted: boolean } | undefined;
    for (const name of names) {
      const version = parseVersion(name);
      if (version && (!newest || version.token > newest.token)) newest = { name, ...version };
      else if (!version && name.includes(layout.tempMark)) await removeIfStaleTemp(path.join(dir, name));
    }
    if (newest) {
      if (!newest.deleted) return; // a live value
      const tombstone = await fs.lstat(path.join(dir, newest.name)).catch(() => undefined);
      if (!tombstone?.isFile() || tombstone.mtimeMs >= options.before) return;
      const hidden = dir.slice(0, -layout.versionsSuffix.length);
      const plain = await fs.lstat(hidden).catch(() => undefined);
      if (plain?.isFile() && plain.mtimeMs <= tombstone.mtimeMs) await unlink(hidden, plain.size);
      for (const name of names) {
        const version = parseVersion(name);
        if (version && version.token <= newest.token) await unlink(path.join(dir, name), 0);
      }
    } else {
      const stats = await fs.lstat(dir).catch(() => undefined);
      if (!stats || stats.mtimeMs >= options.before) return;
    }
    // Fails (not empty) when a newer version landed meanwhile: then it stays.
    await fs.rmdir(dir).then(() => void result.removed++, () => {});
  };

  const walk = async (dir: string, visit: (entry: Dirent, full: string) => Promise<void>) => {
    let handle: Dir;
    try {
      handle = await fs.opendir(dir);
    } catch {
      return;
    }
    for await (const entry of handle) {
      if (stopped()) break;
      if (entry.isSymbolicLink()) continue;
      await visit(entry, path.join(dir, entry.name));
    }
  };

  const walkLocks = (dir: string): Promise<void> =>
    walk(dir, async (entry, full) => {
      if (!entry.isDirectory()) return;
      if (entry.name.endsWith('~')) await sweepLockDir(full);
      else await walkLocks(full);
    });

  const walkData = (dir: string): Promise<void> =>
    walk(dir, async (entry, full) => {
      if (entry.isDirectory()) {
        if (dir === root && entry.name === layout.locksDir) await walkLocks(full);
        else if (entry.name.endsWith(layout.versionsSuffix)) await compactVersions(full);
        else await walkData(full);
      } else if (entry.isFile() && entry.name.includes(layout.tempMark)) {
        await removeIfStaleTemp(full);
      }
    });

  await walkData(root);
  return result;
}

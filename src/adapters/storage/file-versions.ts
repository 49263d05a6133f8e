/**
 * Fenced versions of file storage: the atomic fenced commit. A fenced write
 * publishes its value as a version named by its fencing token
 * (`<key>~v/<token>`, or `<token>d` for a fenced delete: a tombstone), and
 * readers take the newest version. A holder frozen at any point of its write
 * (GC, SIGSTOP, a slow disk) can land its version late, but never above a
 * newer holder's: there is no window between a check and a publish.
 *
 * A publish removes the versions below it, so a key keeps one version. A
 * tombstone outlives its key's value on purpose (it keeps a late, older
 * version from resurrecting the key) and goes with the storage cleaner's
 * sweep once older than its cutoff (file-sweep.ts): bounded, not kept for
 * ever.
 */
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { FencingError, StorageError } from '../../errors.js';
import type { Fence } from '../../types.js';
import { errorCode, lstatOrUndefined, writeAtomic } from './file-io.js';
import { assertFresh, type FileLockContext } from './file-lock.js';
import type { FileTree } from './file-tree.js';

/** Suffix of a key's directory of fenced versions. */
export const VERSIONS = '~v';
/** A version: its fencing token, and `d` for a fenced delete (a tombstone). */
const VERSION = /^([1-9][0-9]{0,15})(d?)$/;

/** A version file's token and kind, from its name; undefined for any other name (temp files). */
export function parseVersion(name: string): { token: number; deleted: boolean } | undefined {
  const match = VERSION.exec(name);
  if (!match) return undefined;
  const token = Number(match[1]);
  return Number.isSafeInteger(token) ? { token, deleted: match[2] === 'd' } : undefined;
}

/** A key's newest version: its file name, token, and whether it is a tombstone. */
export interface Version {
  name: string;
  token: number;
  deleted: boolean;
}

/** The newest version in a key's versions directory; undefined if none. */
export async function newestVersion(versionsDir: string): Promise<Version | undefined> {
  let names: string[];
  try {
    names = await fs.readdir(versionsDir);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
  let newest: Version | undefined;
  for (const name of names) {
    const version = parseVersion(name);
    if (version && (!newest || version.token > newest.token)) newest = { name, ...version };
  }
  return newest;
}

/**
 * Where the value at `file` is: its newest fenced version (a tombstone means
 * deleted), else the plain file. Fenced versions win over the plain file: an
 * unfenced write removes the versions (see {@link dropVersions}).
 */
export async function resolveVersion(file: string): Promise<{ path: string } | { deleted: true }> {
  const versionsDir = file + VERSIONS;
  const stats = await lstatOrUndefined(versionsDir);
  if (stats?.isSymbolicLink()) throw new StorageError(`file storage: refusing to read symbolic link ${versionsDir}`);
  const newest = stats?.isDirectory() ? await newestVersion(versionsDir) : undefined;
  if (!newest) return { path: file };
  return newest.deleted ? { deleted: true } : { path: path.join(versionsDir, newest.name) };
}

/** What a fenced commit needs from the storage around it. */
export interface CommitContext {
  tree: FileTree;
  locks: FileLockContext;
  /** Fault injection for tests: called just before the version's temp file is renamed into place. */
  beforeRename?(tempPath: string): void | Promise<void>;
}

/**
 * The atomic fenced commit: publish the value as version `<token>` in the
 * key's versions directory. The lock is checked first (a holder that lost it
 * is refused at once, like the other storages), and a version that lands
 * under a newer one is withdrawn and refused. `data` undefined publishes a
 * tombstone (a fenced delete).
 */
export async function commitFenced(ctx: CommitContext, file: string, fence: Fence, data: string | undefined): Promise<void> {
  const versionsDir = file + VERSIONS;
  // Refused before anything is made: a stale holder leaves no empty versions directory behind.
  await assertFresh(ctx.locks, fence);
  await ctx.tree.ensureRoot();
  await ctx.tree.checkDirs(versionsDir, true);
  const name = data === undefined ? `${fence.token}d` : String(fence.token);
  const target = path.join(versionsDir, name);
  await ctx.tree.checkLeaf(target);
  await writeAtomic(target, data ?? '', (temp) => ctx.beforeRename?.(temp));
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
  await ctx.tree.sweepTemps(versionsDir);
}

/** Remove a key's fenced versions (after an unfenced write or delete, which then win). */
export async function dropVersions(file: string): Promise<void> {
  const versionsDir = file + VERSIONS;
  const stats = await lstatOrUndefined(versionsDir);
  if (!stats) return;
  if (!stats.isDirectory()) throw new StorageError(`file storage: ${versionsDir} is not a directory`);
  await fs.rm(versionsDir, { recursive: true, force: true });
}

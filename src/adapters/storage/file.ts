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
 * support hard links; NFS is not supported). See `tryLock` for the protocol.
 * Guarantees:
 * - Each fencing token is handed to at most one holder, tokens per lock key
 *   only grow, and they survive restarts (they live in the file names).
 * - Of several processes that find the same expired lock, exactly one takes
 *   it over; the others wait for it.
 * - A lock is taken over only after its holder's lease has run out by the
 *   wall clock (or it was released). Mutual exclusion therefore holds as long
 *   as holders renew before their lease ends and no process stalls past its
 *   lease inside `renew()`; when that fails (a long GC pause, SIGSTOP), two
 *   processes may believe they hold the lock, and the fencing token is what
 *   keeps the stale one from writing: a fenced `store` compares the token with
 *   the newest generation right before its rename. That check and the rename
 *   are two steps, so a writer frozen between them can still land one stale
 *   write (a window of two syscalls, not of the whole write).
 * - A crashed holder's lock is free after its TTL; an unparseable lock file
 *   (disk corruption) counts as held until it is older than the waiter's TTL.
 *
 * On-disk layout (`~` never occurs in a key, so nothing below can collide
 * with a stored key, and `list` skips every name holding it):
 *
 *   <root>/<key>                       a value
 *   <root>/<dir>/<name>~tmp~<pid>-<r>  an in-flight (or crashed) write
 *   <root>/~locks/<lock key>~/<N>      lock generation N: {token, owner, expiresAt, pid, host, released?}
 */
import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CertstateError, CorruptStorageError, FencingError, LockLostError, StorageError } from '../../errors.js';
import type { Fence, LockOptions, Storage, StorageLock, StorageStat, StoreOptions, SweepOptions } from '../../types.js';
import { assertValidKey, assertValidPrefix, isValidKey } from './key.js';
import { acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';
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

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const TEMP_MARK = '~tmp~';
const LOCKS_DIR = '~locks';
/** Temp files older than this are debris of a crash, never a write in flight. */
const STALE_TEMP_MS = 60 * 60 * 1000;
const GENERATION = /^[1-9][0-9]{0,14}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

interface LockRecord {
  token: number;
  owner: string;
  expiresAt: number;
  pid: number;
  host: string;
  released?: boolean;
}

/** A lock generation file as read: parsed, unparseable (judged by its age), or gone. */
type ReadRecord = { record: LockRecord } | { unparseable: true; mtimeMs: number } | { gone: true };

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Rethrow certstate errors as they are; wrap anything else (fs errors) in `StorageError`. */
function wrap(action: string, target: string, error: unknown): never {
  if (error instanceof CertstateError) throw error;
  const detail = error instanceof Error ? error.message : String(error);
  throw new StorageError(`file storage: cannot ${action} ${target}: ${detail}`, { cause: error });
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
}

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

/** fsync a directory so a rename or link in it survives a power cut. */
async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } catch (error) {
    // Some filesystems cannot fsync a directory; the rename is still atomic there.
    if (errorCode(error) !== 'EINVAL') throw error;
  } finally {
    await handle.close();
  }
}

/** Write `data` to a new, unique, 0600 temp file beside `target` and sync it. Returns its path. */
async function writeTemp(target: string, data: string): Promise<string> {
  const temp = `${target}${TEMP_MARK}${process.pid}-${randomBytes(6).toString('hex')}`;
  // O_EXCL: never reuse or follow anything already at that name.
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const handle = await fs.open(temp, flags, FILE_MODE);
  try {
    await handle.chmod(FILE_MODE); // the umask may have stripped bits; make it exactly 0600
    await handle.writeFile(data, 'utf8');
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => {});
    await fs.unlink(temp).catch(() => {});
    throw error;
  }
  await handle.close();
  return temp;
}

/**
 * Replace `target` with `data` atomically: readers see the old or the new
 * file, never a mix. `beforeRename` may veto (throw) after the data is safe
 * on disk; the temp file is then removed.
 */
async function writeAtomic(target: string, data: string, beforeRename?: (temp: string) => unknown): Promise<void> {
  const temp = await writeTemp(target, data);
  try {
    await beforeRename?.(temp);
    await fs.rename(temp, target);
  } catch (error) {
    await fs.unlink(temp).catch(() => {});
    throw error;
  }
  await syncDir(path.dirname(target));
}

/** Numeric lock generations present in `dir`, ascending (none if the dir is absent). */
async function generations(dir: string): Promise<number[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return [];
    throw error;
  }
  return names.filter((n) => GENERATION.test(n)).map(Number).sort((a, b) => a - b);
}

async function newestGeneration(dir: string): Promise<number> {
  return (await generations(dir)).at(-1) ?? 0;
}

function isLockRecord(value: unknown): value is LockRecord {
  const r = value as LockRecord | null;
  return (
    typeof r === 'object' && r !== null &&
    Number.isSafeInteger(r.token) && typeof r.owner === 'string' && Number.isFinite(r.expiresAt)
  );
}

async function readRecord(file: string): Promise<ReadRecord> {
  let text: string;
  try {
    text = await fs.readFile(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { gone: true };
    throw error;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (isLockRecord(parsed)) return { record: parsed };
  } catch {
    // fall through: judged by age below
  }
  const stats = await lstatOrUndefined(file);
  return stats ? { unparseable: true, mtimeMs: stats.mtimeMs } : { gone: true };
}

/**
 * Publish `data` as `dir/name` only if that name does not exist yet. The
 * content is complete before the name appears (write a temp file, then
 * `link` it, which fails with EEXIST atomically), so no reader ever sees a
 * half-written lock. Returns false when someone else has the name.
 */
async function createExclusive(dir: string, name: string, data: string): Promise<boolean> {
  const target = path.join(dir, name);
  const temp = await writeTemp(target, data);
  try {
    await fs.link(temp, target);
  } catch (error) {
    if (errorCode(error) === 'EEXIST') return false;
    throw error;
  } finally {
    await fs.unlink(temp).catch(() => {});
  }
  await syncDir(dir);
  return true;
}

/** Whether keys under directory key `dirKey` (ending in `/`) can start with `prefix`. */
function mayHold(dirKey: string, prefix: string): boolean {
  return dirKey.startsWith(prefix) || prefix.startsWith(dirKey);
}

/**
 * Create a file `Storage` rooted at `dir` (default `./certstate-data`),
 * described as `file:<absolute dir>`. Directories it creates are 0700 and
 * every file 0600. Locks exclude other processes using the same directory on
 * the same host (the filesystem must support hard links).
 */
export function fileStorage(dir: string = DEFAULT_DATA_DIR, options: FileStorageOptions = {}): Storage {
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

  /** Directory holding the generations of lock `key` (`~` keeps it apart from keys and other locks). */
  function lockDirOf(key: string): string {
    return path.join(root, LOCKS_DIR, `${key}~`);
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

  async function assertFresh(fence: Fence): Promise<void> {
    const dir = lockDirOf(fence.lockKey);
    const newest = (await checkDirs(dir, false)) ? await newestGeneration(dir) : 0;
    if (newest === 0 || newest !== fence.token) {
      throw new FencingError(fence.lockKey, fence.token);
    }
  }

  /**
   * One attempt at lock `key`. Protocol: a lock is a directory of generation
   * files `1, 2, 3, …`; the newest generation is the lock's state and its
   * number is the fencing token (so the counter is persisted by the very act
   * of taking the lock). To take the lock, read the newest generation N; if
   * it is released, expired, or unparseable and older than `ttlMs`, publish
   * N+1 with create-exclusive semantics (`link`). Of several processes that
   * saw the same stale N, exactly one creates N+1; the others get EEXIST and
   * look again. The winner then checks that nothing newer than N+1 exists (a
   * very late contender can recreate a generation that was already cleaned
   * up; it backs off) and deletes the older generations. The newest
   * generation is never deleted, so tokens only grow.
   */
  async function tryLock(key: string, ttlMs: number): Promise<Attempt<StorageLock>> {
    const dir = lockDirOf(key);
    await ensureRoot();
    await checkDirs(dir, true);
    await sweepTemps(dir);
    const newest = await newestGeneration(dir);
    if (newest > 0) {
      const read = await readRecord(path.join(dir, String(newest)));
      if ('gone' in read) return { retryInMs: 0 };
      const until =
        'record' in read ? (read.record.released ? 0 : read.record.expiresAt) : read.mtimeMs + ttlMs;
      const wait = until - Date.now();
      if (wait > 0) return { retryInMs: wait };
    }
    const token = newest + 1;
    const record: LockRecord = {
      token,
      owner: randomBytes(12).toString('hex'),
      expiresAt: Date.now() + ttlMs,
      pid: process.pid,
      host: os.hostname(),
    };
    if (!(await createExclusive(dir, String(token), JSON.stringify(record)))) return { retryInMs: 0 };
    const after = await generations(dir);
    if (after.at(-1) !== token) {
      await fs.unlink(path.join(dir, String(token))).catch(() => {});
      return { retryInMs: 0 };
    }
    for (const old of after) {
      if (old < token) await fs.unlink(path.join(dir, String(old))).catch(() => {});
    }
    return { lock: heldLock(key, dir, record, ttlMs) };
  }

  function heldLock(key: string, dir: string, initial: LockRecord, ttlMs: number): StorageLock {
    const file = path.join(dir, String(initial.token));
    let expiresAt = initial.expiresAt;
    let released = false;
    let queue: Promise<unknown> = Promise.resolve();
    // renew and release of one lock run one at a time, in call order.
    const serial = <T>(fn: () => Promise<T>): Promise<T> => {
      const run = queue.then(fn, fn);
      queue = run.catch(() => {});
      return run;
    };
    const ours = async (): Promise<boolean> => {
      if ((await newestGeneration(dir)) !== initial.token) return false;
      const read = await readRecord(file);
      return 'record' in read && read.record.owner === initial.owner && !read.record.released;
    };

    return {
      key,
      fencingToken: initial.token,
      renew: () =>
        serial(async () => {
          // A lease that has run out may already be someone else's: never extend it.
          if (released || expiresAt <= Date.now()) throw new LockLostError(key);
          try {
            if (!(await ours())) throw new LockLostError(key);
            const next = Date.now() + ttlMs;
            await writeAtomic(file, JSON.stringify({ ...initial, expiresAt: next }));
            // A contender that judged us expired just before the rewrite shows up now.
            if ((await newestGeneration(dir)) !== initial.token) throw new LockLostError(key);
            expiresAt = next;
          } catch (error) {
            wrap('renew lock', key, error);
          }
        }),
      release: () =>
        serial(async () => {
          if (released) return;
          released = true;
          try {
            if (await ours()) await writeAtomic(file, JSON.stringify({ ...initial, expiresAt: 0, released: true }));
          } catch (error) {
            wrap('release lock', key, error);
          }
          waiters.wake(key);
        }),
    };
  }

  return {
    description: `file:${root}`,

    async load(key: string): Promise<string | undefined> {
      assertValidKey(key);
      const file = pathOf(key);
      let handle: fs.FileHandle;
      try {
        if (!(await checkDirs(path.dirname(file), false))) return undefined;
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
    },

    async store(key: string, value: string, storeOptions?: StoreOptions): Promise<void> {
      assertValidKey(key);
      const fence = storeOptions?.fence;
      if (fence) assertValidKey(fence.lockKey);
      const file = pathOf(key);
      try {
        await ensureRoot();
        await checkDirs(path.dirname(file), true);
        await checkLeaf(file);
        await writeAtomic(file, value, async (temp) => {
          // Checked as late as possible: after the data is on disk, right before it becomes visible.
          if (fence) await assertFresh(fence);
          await hooks?.beforeRename?.(temp);
        });
      } catch (error) {
        wrap('write', file, error);
      }
      await sweepTemps(path.dirname(file));
    },

    async delete(key: string): Promise<void> {
      assertValidKey(key);
      const file = pathOf(key);
      try {
        if (!(await checkDirs(path.dirname(file), false))) return;
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
      const keys: string[] = [];
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
          const key = keyPrefix + entry.name;
          // Skips temp files and the lock tree (their names hold `~`) and foreign names.
          if (!isValidKey(key)) continue;
          if (entry.isFile() && key.startsWith(prefix)) keys.push(key);
          else if (entry.isDirectory() && mayHold(`${key}/`, prefix)) {
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
      return keys;
    },

    async stat(key: string): Promise<StorageStat | undefined> {
      assertValidKey(key);
      const file = pathOf(key);
      let stats: Stats | undefined;
      try {
        if (!(await checkDirs(path.dirname(file), false))) return undefined;
        stats = await lstatOrUndefined(file);
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
          return await tryLock(key, ttlMs);
        } catch (error) {
          wrap('lock', key, error);
        }
      };
      return acquireWithRetry(key, waiters, pollMs, attempt, (lock) => lock.release(), lockOptions?.signal);
    },

    /** Temp files of crashed writes and directories of dead locks (see file-sweep.ts). */
    sweep: (sweepOptions: SweepOptions) => sweepFileDebris(root, { tempMark: TEMP_MARK, locksDir: LOCKS_DIR, staleTempMs: STALE_TEMP_MS }, sweepOptions),
  };
}

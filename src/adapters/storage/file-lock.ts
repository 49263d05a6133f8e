/**
 * Leased locks and fencing tokens for file storage, across processes sharing
 * one local filesystem (hard links required; NFS unsupported).
 *
 * A lock key is a directory of generation files `1, 2, 3, …`; the newest is
 * the lock's state. To take the lock, read the newest generation N; if it is
 * released, or its lease ran out, publish N+1 with create-exclusive semantics
 * (`link`): of several processes that saw the same N exactly one creates N+1.
 * The newest generation is never deleted.
 *
 * **One clock.** A lease is judged on the filesystem's timestamps, never on a
 * process's wall clock: a generation's lease ends `ttlMs` after its file's
 * modification time (set by the kernel at each renewal, which rewrites the
 * file), compared with the modification time of a file the contender creates
 * now ({@link filesystemNow}). A process whose clock was stepped (NTP,
 * `faketime`, VM resume) therefore neither takes a live lock nor waits on a
 * dead one.
 *
 * **Tokens.** The fencing token lives in the generation's record, not in its
 * name: `max(previous token + 1, filesystem time in µs)`. A lock directory
 * that was lost (deleted, restored from an older backup) starts again above
 * every token handed out before, so a paused holder's token never matches
 * again. Tokens stay below 2^53.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FencingError, LockLostError, StorageError } from '../../errors.js';
import type { Fence, StorageLock } from '../../types.js';
import type { Attempt, LockWaiters } from './lock-wait.js';
import { createExclusive, errorCode, filesystemNow, mtimeOf, wrap, writeAtomic } from './file-io.js';

/** Generation file names: sequence numbers (safe integers). */
const GENERATION = /^[1-9][0-9]{0,15}$/;
const MAX_TOKEN = Number.MAX_SAFE_INTEGER - 1;

interface LockRecord {
  token: number;
  owner: string;
  /** The lease, counted from the file's modification time (absent in records of older versions: the waiter's ttl then). */
  ttlMs?: number;
  pid: number;
  host: string;
  released?: boolean;
}

/** A lock generation file as read: parsed, unparseable (judged by its age alone), or gone. */
type ReadRecord = { record: LockRecord; mtime: number } | { unparseable: true; mtime: number } | { gone: true };

function isLockRecord(value: unknown): value is LockRecord {
  const r = value as LockRecord | null;
  return typeof r === 'object' && r !== null && Number.isSafeInteger(r.token) && r.token > 0 && typeof r.owner === 'string';
}

async function readRecord(file: string): Promise<ReadRecord> {
  let text: string;
  try {
    text = await fs.readFile(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { gone: true };
    throw error;
  }
  const mtime = await mtimeOf(file);
  if (mtime === undefined) return { gone: true };
  try {
    const parsed: unknown = JSON.parse(text);
    if (isLockRecord(parsed)) return { record: parsed, mtime };
  } catch {
    // fall through: judged by age
  }
  return { unparseable: true, mtime };
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
  return names.filter((n) => GENERATION.test(n)).map(Number).filter(Number.isSafeInteger).sort((a, b) => a - b);
}

async function newestGeneration(dir: string): Promise<number> {
  return (await generations(dir)).at(-1) ?? 0;
}

/** Next token: above the previous one and at least the filesystem clock in µs; from the clock again at 2^53. */
function nextToken(previous: number, nowMs: number): number {
  const clock = Math.floor(nowMs * 1000);
  const next = previous + 1;
  return next > MAX_TOKEN || next < clock ? clock : next;
}

/** What the lock protocol needs from the storage around it. */
export interface FileLockContext {
  /** Directory holding the generations of lock `key`, created if missing (symlinks refused). */
  lockDir(key: string, create: boolean): Promise<string | undefined>;
  waiters: LockWaiters;
}

/** The token of lock `key`'s newest generation, or 0 when it has none (never locked, or lost). */
export async function currentToken(ctx: FileLockContext, key: string): Promise<number> {
  const dir = await ctx.lockDir(key, false);
  if (!dir) return 0;
  const newest = await newestGeneration(dir);
  if (newest === 0) return 0;
  const read = await readRecord(path.join(dir, String(newest)));
  return 'record' in read ? read.record.token : 0;
}

/** Throw `FencingError` unless `fence.token` is the token of the lock's newest generation. */
export async function assertFresh(ctx: FileLockContext, fence: Fence): Promise<void> {
  const current = await currentToken(ctx, fence.lockKey);
  if (current === 0 || current !== fence.token) throw new FencingError(fence.lockKey, fence.token);
}

/** One attempt at lock `key` (see the module comment for the protocol). */
export async function tryLock(ctx: FileLockContext, key: string, ttlMs: number): Promise<Attempt<StorageLock>> {
  const dir = (await ctx.lockDir(key, true))!;
  const newest = await newestGeneration(dir);
  const now = await filesystemNow(dir);
  let previous = 0;
  if (newest > 0) {
    const read = await readRecord(path.join(dir, String(newest)));
    if ('gone' in read) return { retryInMs: 0 };
    const lease = 'record' in read ? (read.record.ttlMs ?? ttlMs) : ttlMs;
    const until = 'record' in read && read.record.released ? 0 : read.mtime + lease;
    const wait = until - now;
    if (wait > 0) return { retryInMs: wait };
    if ('record' in read) previous = read.record.token;
  }
  const generation = newest + 1;
  if (!Number.isSafeInteger(generation) || String(generation).length > 16) {
    throw new StorageError(`file storage: lock ${key} has run out of generation numbers; remove ${dir} while no process holds it`);
  }
  const record: LockRecord = { token: nextToken(previous, now), owner: randomBytes(12).toString('hex'), ttlMs, pid: process.pid, host: os.hostname() };
  if (!(await createExclusive(dir, String(generation), JSON.stringify(record)))) return { retryInMs: 0 };
  const after = await generations(dir);
  if (after.at(-1) !== generation) {
    // A very late contender recreated a generation that was already cleaned up: back off.
    await fs.unlink(path.join(dir, String(generation))).catch(() => {});
    return { retryInMs: 0 };
  }
  for (const old of after) {
    if (old < generation) await fs.unlink(path.join(dir, String(old))).catch(() => {});
  }
  return { lock: heldLock(ctx, key, dir, generation, record, ttlMs) };
}

function heldLock(ctx: FileLockContext, key: string, dir: string, generation: number, record: LockRecord, ttlMs: number): StorageLock {
  const file = path.join(dir, String(generation));
  let released = false;
  let queue: Promise<unknown> = Promise.resolve();
  // renew and release of one lock run one at a time, in call order.
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };
  /** Our generation is the newest and unreleased; with its modification time. */
  const ours = async (): Promise<number | undefined> => {
    if ((await newestGeneration(dir)) !== generation) return undefined;
    const read = await readRecord(file);
    return 'record' in read && read.record.owner === record.owner && !read.record.released ? read.mtime : undefined;
  };

  return {
    key,
    fencingToken: record.token,
    renew: () =>
      serial(async () => {
        if (released) throw new LockLostError(key);
        try {
          const renewedAt = await ours();
          // A lease that has run out (on the filesystem's clock) may already be someone else's: never extend it.
          if (renewedAt === undefined || renewedAt + ttlMs <= (await filesystemNow(dir))) throw new LockLostError(key);
          await writeAtomic(file, JSON.stringify(record));
          // A contender that judged us expired just before the rewrite shows up now.
          if ((await newestGeneration(dir)) !== generation) throw new LockLostError(key);
        } catch (error) {
          wrap('renew lock', key, error);
        }
      }),
    release: () =>
      serial(async () => {
        if (released) return;
        released = true;
        try {
          if ((await ours()) !== undefined) await writeAtomic(file, JSON.stringify({ ...record, released: true }));
        } catch (error) {
          wrap('release lock', key, error);
        }
        ctx.waiters.wake(key);
      }),
  };
}

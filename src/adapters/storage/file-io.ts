/**
 * The filesystem steps file storage is built from: private temp files,
 * atomic replacement, exclusive publication, directory syncs, and the
 * filesystem's own clock. Each is one small operation with its own failure
 * rules; file.ts and file-lock.ts compose them.
 */
import { randomBytes } from 'node:crypto';
import { constants, type BigIntStats, type Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { CertstateError, CorruptStorageError, StorageError } from '../../errors.js';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;
/** Marks an in-flight (or crashed) write; `~` never occurs in a key. */
export const TEMP_MARK = '~tmp~';
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Rethrow certstate errors as they are; wrap anything else (fs errors) in `StorageError`. */
export function wrap(action: string, target: string, error: unknown): never {
  if (error instanceof CertstateError) throw error;
  const detail = error instanceof Error ? error.message : String(error);
  throw new StorageError(`file storage: cannot ${action} ${target}: ${detail}`, { cause: error });
}

export async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (error) {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') return undefined;
    throw error;
  }
}

/** fsync a directory so a rename or link in it survives a power cut. */
export async function syncDir(dir: string): Promise<void> {
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

function tempName(target: string): string {
  return `${target}${TEMP_MARK}${process.pid}-${randomBytes(6).toString('hex')}`;
}

/** Write `data` to a new, unique, 0600 temp file beside `target` and sync it. Returns its path. */
export async function writeTemp(target: string, data: string): Promise<string> {
  const temp = tempName(target);
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
export async function writeAtomic(target: string, data: string, beforeRename?: (temp: string) => unknown): Promise<void> {
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

/**
 * Publish `data` as `dir/name` only if that name does not exist yet. The
 * content is complete before the name appears (write a temp file, then
 * `link` it, which fails with EEXIST atomically), so no reader ever sees a
 * half-written file. Returns false when someone else has the name.
 */
export async function createExclusive(dir: string, name: string, data: string): Promise<boolean> {
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

/**
 * The filesystem's clock, ms since epoch: the modification time the kernel
 * gives a file created in `dir` now. Every process on the host reads the same
 * clock this way, whatever its own wall clock says (a process under
 * `faketime`, a container with a shifted clock), so leases written and judged
 * by file timestamps are judged on one clock.
 */
export async function filesystemNow(dir: string): Promise<number> {
  const probe = tempName(path.join(dir, 'now'));
  const handle = await fs.open(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
  try {
    const stats = await handle.stat({ bigint: true });
    return Number(stats.mtimeNs / 1000n) / 1000;
  } finally {
    await handle.close().catch(() => {});
    await fs.unlink(probe).catch(() => {});
  }
}

/** A file's modification time in ms with sub-ms precision (the filesystem's clock), or undefined when absent. */
export async function mtimeOf(file: string): Promise<number | undefined> {
  try {
    const stats = await fs.lstat(file, { bigint: true });
    return Number(stats.mtimeNs / 1000n) / 1000;
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Read up to `size` bytes from the start of the file into `buffer` at `offset` (values are
 * replaced by rename, so the size `fstat` just reported is the file's); fewer at end of file.
 * Returns the bytes read.
 */
async function readInto(handle: fs.FileHandle, buffer: Uint8Array, offset: number, size: number): Promise<number> {
  let filled = 0;
  while (filled < size) {
    const { bytesRead } = await handle.read(buffer, offset + filled, size - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/**
 * A value read from its file, with its version when asked. A class, not an
 * object literal: V8 pretenures a literal's allocation site once most of its
 * objects outlive young collections, and this one's did during the start-up
 * index's check (26,721 of 28,000 made straight in old space, 30,000 names):
 * each then held its ~5 KB value string in old space until a full collection.
 * Objects made by a constructor are never pretenured.
 */
export class ReadValue {
  constructor(
    readonly value: string,
    readonly version?: string,
  ) {}
}

/** Read one value file; undefined when absent. */
export async function readValue(key: string, file: string): Promise<ReadValue | undefined> {
  return readFileValue(key, file, false);
}

/**
 * Read one value file with its version (see {@link versionOf}) taken from the
 * descriptor the value was read through, so the two belong together; undefined when absent.
 */
export async function readValueVersioned(key: string, file: string): Promise<{ value: string; version: string } | undefined> {
  return (await readFileValue(key, file, true)) as { value: string; version: string } | undefined;
}

/**
 * A cheap identity of one file's content, from `stat`: size, inode, and the
 * modification and change times in ns. Values are replaced by rename (a new
 * inode), and an edit in place changes the times; the change time cannot be
 * set back by `utimes` or `cp -p`. Equal versions mean the same content.
 * One flat string (`join`, not a template: that makes a tree of string
 * pieces, ~3 x the bytes, and a version is kept per name).
 */
export function versionOf(stats: BigIntStats): string {
  return [stats.size.toString(36), stats.ino.toString(36), stats.mtimeNs.toString(36), stats.ctimeNs.toString(36)].join('.');
}

/** A value's bytes as its string; `CorruptStorageError` when they are not valid UTF-8. */
export function decodeValue(key: string, file: string, bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch (error) {
    throw new CorruptStorageError(key, `${file} is not valid UTF-8`, error);
  }
}

/** Open a value file to read it; undefined when absent. */
async function openValue(file: string): Promise<fs.FileHandle | undefined> {
  try {
    // O_NOFOLLOW: a symlink planted at the key is refused, not read.
    // O_NONBLOCK: a FIFO planted at the key must not hang the read.
    return await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ELOOP') throw new StorageError(`file storage: refusing to read symbolic link ${file}`, { cause: error });
    wrap('read', file, error);
  }
}

async function readFileValue(key: string, file: string, versioned: boolean): Promise<ReadValue | undefined> {
  const handle = await openValue(file);
  if (handle === undefined) return undefined;
  try {
    const stats = versioned ? await handle.stat({ bigint: true }) : await handle.stat();
    if (!stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
    // One read of the size just reported, not readFile's own fstat and read loop (start-up
    // reads every stored certificate: each thread-pool round trip counts).
    const buffer = Buffer.allocUnsafe(Number(stats.size));
    const value = decodeValue(key, file, buffer.subarray(0, await readInto(handle, buffer, 0, buffer.length)));
    return new ReadValue(value, versioned ? versionOf(stats as BigIntStats) : undefined);
  } catch (error) {
    wrap('read', file, error);
  } finally {
    await handle.close().catch(() => {});
  }
}

/**
 * Read one value file's bytes, undecoded, with their version (see
 * {@link versionOf}) from the descriptor they were read through: into the
 * buffer `place` gives for the size `fstat` reports (the bulk read's batch
 * buffer, outside V8's heap). Returns the bytes read and the version;
 * undefined when absent. The caller decodes them ({@link decodeValue}) when it needs the string.
 */
export async function readValueBytes(file: string, place: (size: number) => { buffer: Uint8Array; offset: number }): Promise<{ size: number; version: string } | undefined> {
  const handle = await openValue(file);
  if (handle === undefined) return undefined;
  try {
    const stats = await handle.stat({ bigint: true });
    if (!stats.isFile()) throw new StorageError(`file storage: ${file} is not a regular file`);
    const { buffer, offset } = place(Number(stats.size));
    return { size: await readInto(handle, buffer, offset, Number(stats.size)), version: versionOf(stats) };
  } catch (error) {
    wrap('read', file, error);
  } finally {
    await handle.close().catch(() => {});
  }
}

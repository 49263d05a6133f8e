/**
 * File storage's part of the engine's start-up index (`Storage.startupIndex`):
 * the index file itself, read and written as a stream of lines, and the
 * versions of stored values (one directory listing and an `lstat` per key,
 * no read), which let the engine tell which files changed since an index
 * entry was made.
 *
 * The index lives at `<root>/~index/startup`: `~` never occurs in a key, so
 * no key can name it and `list`/`entries` never show it. It is replaced
 * whole by rename (temp file, fsync, rename, directory fsync), so readers in
 * other processes see an old or a new index, never a torn one: no lock.
 * What the lines mean is the engine's business (startup-index.ts).
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { CorruptStorageError } from '../../errors.js';
import { FILE_MODE, TEMP_MARK, errorCode, syncDir, versionOf, wrap } from './file-io.js';
import type { FileTree } from './file-tree.js';
import { newestVersion, VERSIONS } from './file-versions.js';
import { isValidKey } from './key.js';
import { mayHold, openListing, walkStart, type WalkDir } from './file-walk.js';

const INDEX_DIR = '~index';
const INDEX_FILE = 'startup';
/** Bytes read from the index at a time. */
const CHUNK = 1 << 20;
/** `lstat`s in flight while listing versions. */
const STATS_IN_FLIGHT = 32;
const BATCH = 1024;

/** The index's lines in batches (nothing when there is no index); see `StartupIndexStorage.read`. */
export async function* readIndexLines(tree: FileTree, maxBytes: number): AsyncGenerator<string[]> {
  const dir = path.join(tree.root, INDEX_DIR);
  const file = path.join(dir, INDEX_FILE);
  let handle: fs.FileHandle;
  try {
    if (!(await tree.checkDirs(dir, false))) return;
    // O_NOFOLLOW: a link planted at the index is refused; O_NONBLOCK: a FIFO must not hang start-up.
    handle = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    wrap('read', file, error);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new CorruptStorageError(INDEX_FILE, `${file} is not a regular file`);
    if (stats.size > maxBytes) throw new CorruptStorageError(INDEX_FILE, `${file} is larger than ${maxBytes} bytes`);
    const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const buffer = Buffer.allocUnsafe(CHUNK);
    let carry = '';
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, CHUNK, null);
      total += bytesRead;
      // The file may have grown since fstat (not ours: ours are replaced by rename): still bounded.
      if (total > maxBytes) throw new CorruptStorageError(INDEX_FILE, `${file} is larger than ${maxBytes} bytes`);
      let text: string;
      try {
        text = carry + decoder.decode(buffer.subarray(0, bytesRead), { stream: bytesRead > 0 });
      } catch (error) {
        throw new CorruptStorageError(INDEX_FILE, `${file} is not valid UTF-8`, error);
      }
      if (bytesRead === 0) {
        if (text.length > 0) yield [text]; // a last line without its newline: the reader judges it
        return;
      }
      const lines = text.split('\n');
      carry = lines.pop()!;
      if (lines.length > 0) yield lines;
    }
  } catch (error) {
    wrap('read', file, error);
  } finally {
    await handle.close().catch(() => {});
  }
}

/** Replace the index with `lines` (each batch's lines, one per line), atomically; see `StartupIndexStorage.write`. */
export async function writeIndexLines(tree: FileTree, lines: AsyncIterable<string[]>): Promise<void> {
  const dir = path.join(tree.root, INDEX_DIR);
  const file = path.join(dir, INDEX_FILE);
  let temp: string | undefined;
  try {
    await tree.ensureRoot();
    await tree.checkDirs(dir, true);
    await tree.checkLeaf(file);
    temp = `${file}${TEMP_MARK}${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    const handle = await fs.open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
    try {
      await handle.chmod(FILE_MODE);
      for await (const batch of lines) if (batch.length > 0) await handle.write(`${batch.join('\n')}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, file);
    temp = undefined;
    await syncDir(dir);
  } catch (error) {
    if (temp) await fs.unlink(temp).catch(() => {});
    wrap('write', file, error);
  }
}

/**
 * Every key under `prefix` with its value's version (`versionOf` of the file
 * a read would read: the newest fenced version, else the plain file), in
 * batches; tombstoned keys are left out. Same walk as `list`.
 */
export async function* fileVersions(tree: FileTree, prefix: string): AsyncGenerator<Array<readonly [string, string]>> {
  const first = await walkStart(tree, prefix);
  if (!first) return;
  const pending: WalkDir[] = [first];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const { dir, keyPrefix } = next;
    // First pass: the keys with fenced versions (few), whose plain file is not what a read reads,
    // and the subdirectories. Second pass: every value's file, stat-ed in chunks.
    const versioned = new Map<string, string>();
    for await (const entry of await openListing(dir)) {
      if (entry.isDirectory() && entry.name.endsWith(VERSIONS)) {
        const key = keyPrefix + entry.name.slice(0, -VERSIONS.length);
        if (isValidKey(key) && key.startsWith(prefix)) versioned.set(key, path.join(dir, entry.name));
      } else if (entry.isDirectory() && isValidKey(keyPrefix + entry.name)) {
        const key = keyPrefix + entry.name;
        if (mayHold(`${key}/`, prefix)) pending.push({ dir: path.join(dir, entry.name), keyPrefix: `${key}/` });
      }
    }
    let chunk: Array<{ key: string; file: string; versions: boolean }> = [...versioned].map(([key, file]) => ({ key, file, versions: true }));
    for await (const entry of await openListing(dir)) {
      const key = keyPrefix + entry.name;
      // Temp files and the lock tree hold `~` (not keys); a key with versions was taken above.
      if (!entry.isFile() || !isValidKey(key) || !key.startsWith(prefix) || versioned.has(key)) continue;
      chunk.push({ key, file: path.join(dir, entry.name), versions: false });
      if (chunk.length >= BATCH) {
        const out = await statChunk(dir, chunk);
        chunk = [];
        if (out.length > 0) yield out;
      }
    }
    const out = await statChunk(dir, chunk);
    if (out.length > 0) yield out;
  }
}

/** The versions of a chunk of keys' files, STATS_IN_FLIGHT at a time; a key whose file is gone (or tombstoned) is left out. */
async function statChunk(dir: string, items: ReadonlyArray<{ key: string; file: string; versions: boolean }>): Promise<Array<readonly [string, string]>> {
  const out: Array<readonly [string, string]> = [];
  let at = 0;
  const worker = async () => {
    while (at < items.length) {
      const { key, file, versions } = items[at++]!;
      let target: string | undefined = file;
      if (versions) {
        const newest = await newestVersion(file);
        // No version in it: the plain file is what a read reads.
        target = !newest ? file.slice(0, -VERSIONS.length) : newest.deleted ? undefined : path.join(file, newest.name);
      }
      if (target === undefined) continue;
      let stats;
      try {
        stats = await fs.lstat(target, { bigint: true });
      } catch (error) {
        if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') continue;
        throw error;
      }
      if (stats.isFile()) out.push([key, versionOf(stats)]);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(STATS_IN_FLIGHT, items.length) }, worker));
  } catch (error) {
    wrap('stat', dir, error);
  }
  return out;
}

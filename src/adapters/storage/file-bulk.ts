/**
 * File storage's bulk read (`Storage.entries`): the keys of one directory
 * listing (streamed with `opendir`), read 64 at a time, in batches of 256,
 * the next batch read while the caller handles the one yielded.
 * What it saves over `load` per key is the per-key look for the directory
 * and for a versions directory: the listing already says which keys have one
 * (those are read through `load`, which picks the newest version). Keys in
 * subdirectories are listed and read the same way; temp files, the lock tree
 * and foreign names are skipped as `list` skips them; keys the caller does
 * not want (`only`, asked as each batch is made) are not read. Each value comes with its version (see
 * file-io.ts `versionOf`), from the descriptor it was read through. A value that is not
 * valid UTF-8 is left out of the batch (its per-name read reports it), not
 * an error of the whole listing.
 *
 * **Memory.** A batch is read into one buffer outside V8's heap (two, used in
 * turn: one read while the caller handles the other), and its values become
 * strings only as they are handed over, 16 at a time. So a value's string
 * (a stored certificate: ~5 KB) lives while the caller handles its 16, not
 * while a batch is read ahead and handled: held that long, the objects made
 * per value outlived young-generation collections, V8's allocation-site
 * pretenuring then made them in old space, and the strings they held were
 * promoted there and died there — most of the old space a start-up left was
 * that fragmentation (BENCHMARKS.md, "The bulk read's memory"). The listing
 * keeps each file's name only (a key and a path are made when it is read).
 */
import path from 'node:path';
import { CorruptStorageError } from '../../errors.js';
import type { StorageEntry } from '../../types.js';
import { decodeValue, readValueBytes } from './file-io.js';
import type { FileTree } from './file-tree.js';
import { VERSIONS } from './file-versions.js';
import { isValidKey } from './key.js';
import { mayHold, openListing, walkStart, type WalkDir } from './file-walk.js';

const READS_IN_FLIGHT = 64;
const BATCH = 256;
/** Values handed over at a time (each decoded as its group is handed over). */
const HANDED = 16;
/** A batch buffer's first size (stored certificates are ~3–6 KB); it grows to what a batch needed, up to MAX_BUFFER. */
const FIRST_BUFFER = BATCH * 8192;
const MAX_BUFFER = 32 << 20;

type Load = (key: string) => Promise<{ value: string; version: string } | undefined>;

/**
 * Every key under `prefix` (that `only` accepts) with its value and the
 * value's version (from the descriptor it was read through), in batches (see
 * `Storage.entries`). `load` reads keys that have fenced versions.
 */
export async function* fileEntries(tree: FileTree, prefix: string, load: Load, only?: (key: string) => boolean): AsyncGenerator<StorageEntry[]> {
  const first = await walkStart(tree, prefix);
  if (!first) return;
  const pending: WalkDir[] = [first];
  const buffers = [new BatchBuffer(), new BatchBuffer()];
  let turn = 0;
  for (let next = pending.pop(); next; next = pending.pop()) {
    const { dir, keyPrefix } = next;
    const { plain, versioned } = await listDir(dir, keyPrefix, prefix, pending);
    const wanted = (key: string) => only === undefined || only(key);
    // Keys with fenced versions (few) first, through `load`; then the plain files, by name.
    const fenced = [...versioned].filter(wanted);
    let at = 0;
    /** The next batch: up to BATCH wanted keys, read into the next buffer. */
    const start = (): Promise<BatchRead> | undefined => {
      const batch = new BatchRead(buffers[turn++ % 2]!);
      while (fenced.length > 0 && batch.size < BATCH) batch.add(fenced.pop()!, undefined);
      for (; at < plain.length && batch.size < BATCH; at++) {
        const key = keyPrefix + plain[at]!;
        if (!versioned.has(key) && wanted(key)) batch.add(key, path.join(dir, plain[at]!));
      }
      if (batch.size === 0) return undefined;
      // A read failure surfaces when its batch is awaited (or not at all, if the caller stopped before it).
      const reading = batch.read(load);
      reading.catch(() => {});
      return reading;
    };
    // The next batch is read while the caller works on this one: the reads run on the thread
    // pool (the other core) while the caller parses, instead of one waiting for the other.
    for (let reading = start(); reading; ) {
      const batch = await reading;
      reading = start();
      for (let from = 0; from < batch.size; from += HANDED) {
        const handed = batch.entries(from, Math.min(batch.size, from + HANDED));
        if (handed.length > 0) yield handed;
      }
    }
  }
}

/**
 * A batch's buffer, reused batch after batch: values are read into it at
 * increasing offsets; one that does not fit gets a buffer of its own, and
 * the next batch gets a buffer as large as this one needed (up to MAX_BUFFER).
 */
class BatchBuffer {
  bytes = Buffer.allocUnsafeSlow(FIRST_BUFFER);
  #used = 0;
  #needed = 0;

  /** Start a batch: the whole buffer free, grown first if the last batch did not fit. */
  reset(): void {
    if (this.#needed > this.bytes.length) this.bytes = Buffer.allocUnsafeSlow(Math.min(MAX_BUFFER, this.#needed));
    this.#used = 0;
    this.#needed = 0;
  }

  /** Room for `size` bytes: their offset in `bytes`, or -1 (the value then gets a buffer of its own). */
  take(size: number): number {
    this.#needed += size;
    if (this.#used + size > this.bytes.length) return -1;
    const offset = this.#used;
    this.#used += size;
    return offset;
  }
}

/** One batch being read: its keys, and per key where its bytes are (or its string, read through `load`) and its version. */
class BatchRead {
  readonly #buffer: BatchBuffer;
  readonly #keys: string[] = [];
  /** Per key: the file to read, or undefined for a key with fenced versions (read through `load`). */
  readonly #files: Array<string | undefined> = [];
  readonly #offsets = new Int32Array(BATCH);
  /** Bytes read per key; -1: absent. */
  readonly #sizes = new Int32Array(BATCH).fill(-1);
  readonly #versions: Array<string | undefined> = [];
  /** A value that did not fit the buffer (its own bytes), or one read through `load` (a string). */
  readonly #own: Array<Uint8Array | string | undefined> = [];

  constructor(buffer: BatchBuffer) {
    this.#buffer = buffer;
    buffer.reset();
  }

  get size(): number {
    return this.#keys.length;
  }

  add(key: string, file: string | undefined): void {
    this.#keys.push(key);
    this.#files.push(file);
  }

  /** Read every key, READS_IN_FLIGHT at a time. */
  async read(load: Load): Promise<BatchRead> {
    let next = 0;
    const worker = async () => {
      while (next < this.#keys.length) await this.#readOne(next++, load);
    };
    await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, this.#keys.length) }, worker));
    return this;
  }

  async #readOne(j: number, load: Load): Promise<void> {
    const file = this.#files[j];
    if (file === undefined) {
      try {
        const read = await load(this.#keys[j]!);
        if (read === undefined) return;
        this.#own[j] = read.value;
        this.#versions[j] = read.version;
        this.#sizes[j] = read.value.length;
      } catch (error) {
        // One undecodable value must not cost the whole listing: it is left out,
        // and the per-name read that follows reports it as corrupt (counted absent).
        if (!(error instanceof CorruptStorageError)) throw error;
      }
      return;
    }
    const buffer = this.#buffer;
    const read = await readValueBytes(file, (size) => {
      const offset = buffer.take(size);
      if (offset >= 0) {
        this.#offsets[j] = offset;
        return { buffer: buffer.bytes, offset };
      }
      const own = Buffer.allocUnsafe(size);
      this.#own[j] = own;
      return { buffer: own, offset: 0 };
    });
    if (read === undefined) return;
    this.#sizes[j] = read.size;
    this.#versions[j] = read.version;
  }

  /** Entries `from`..`to` (exclusive) as the caller gets them: decoded now; absent and undecodable values left out. */
  entries(from: number, to: number): StorageEntry[] {
    const out: StorageEntry[] = [];
    for (let j = from; j < to; j++) {
      const size = this.#sizes[j]!;
      if (size < 0) continue;
      const own = this.#own[j];
      const key = this.#keys[j]!;
      let value: string;
      if (typeof own === 'string') value = own;
      else {
        const offset = own ? 0 : this.#offsets[j]!;
        try {
          value = decodeValue(key, this.#files[j]!, (own ?? this.#buffer.bytes).subarray(offset, offset + size));
        } catch (error) {
          // Not UTF-8: left out, its per-name read reports it (see #readOne).
          if (!(error instanceof CorruptStorageError)) throw error;
          continue;
        }
      }
      out.push([key, value, this.#versions[j]]);
    }
    return out;
  }
}

/** One directory's plain files (by name) under `prefix`, keys with a versions directory, and subdirectories to walk. */
async function listDir(dir: string, keyPrefix: string, prefix: string, pending: WalkDir[]) {
  const plain: string[] = [];
  const versioned = new Set<string>();
  for await (const entry of await openListing(dir)) {
    if (entry.isDirectory() && entry.name.endsWith(VERSIONS)) {
      const key = keyPrefix + entry.name.slice(0, -VERSIONS.length);
      if (isValidKey(key) && key.startsWith(prefix)) versioned.add(key);
      continue;
    }
    const key = keyPrefix + entry.name;
    if (!isValidKey(key)) continue; // temp files and the lock tree hold `~`
    if (entry.isFile() && key.startsWith(prefix)) plain.push(entry.name);
    else if (entry.isDirectory() && mayHold(`${key}/`, prefix)) pending.push({ dir: path.join(dir, entry.name), keyPrefix: `${key}/` });
  }
  return { plain, versioned };
}

/**
 * File storage's bulk read (`Storage.entries`): the keys of one directory
 * listing (streamed with `opendir`), read 64 at a time, in batches of 256,
 * the next batch read while the caller handles the one yielded.
 * What it saves over `load` per key is the per-key look for the directory
 * and for a versions directory: the listing already says which keys have one
 * (those are read through `load`, which picks the newest version). Keys in
 * subdirectories are listed and read the same way; temp files, the lock tree
 * and foreign names are skipped as `list` skips them; keys the caller does
 * not want (`only`) are not read. Each value comes with its version (see
 * file-io.ts `versionOf`), from the descriptor it was read through. A value that is not
 * valid UTF-8 is left out of the batch (its per-name read reports it), not
 * an error of the whole listing.
 */
import path from 'node:path';
import { CorruptStorageError } from '../../errors.js';
import type { StorageEntry } from '../../types.js';
import { readValueVersioned } from './file-io.js';
import type { FileTree } from './file-tree.js';
import { VERSIONS } from './file-versions.js';
import { isValidKey } from './key.js';
import { mayHold, openListing, walkStart, type WalkDir } from './file-walk.js';

const READS_IN_FLIGHT = 64;
const BATCH = 256;

/**
 * Every key under `prefix` (that `only` accepts) with its value and the
 * value's version (from the descriptor it was read through), in batches (see
 * `Storage.entries`). `load` reads keys that have fenced versions.
 */
export async function* fileEntries(
  tree: FileTree,
  prefix: string,
  load: (key: string) => Promise<{ value: string; version: string } | undefined>,
  only?: (key: string) => boolean,
): AsyncGenerator<StorageEntry[]> {
  const first = await walkStart(tree, prefix);
  if (!first) return;
  const pending: WalkDir[] = [first];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const { plain, versioned } = await listDir(next.dir, next.keyPrefix, prefix, pending);
    const wanted = (k: string) => only === undefined || only(k);
    const keys = [
      ...plain.filter((k) => !versioned.has(k) && wanted(k)).map((k) => ({ key: k, file: path.join(next!.dir, k.slice(next!.keyPrefix.length)) })),
      ...[...versioned].filter(wanted).map((k) => ({ key: k, file: undefined })),
    ];
    const readBatch = async (slice: typeof keys): Promise<StorageEntry[]> => {
      const values: Array<{ value: string; version: string } | undefined> = new Array(slice.length);
      let at = 0;
      const worker = async () => {
        while (at < slice.length) {
          const j = at++;
          const { key, file } = slice[j]!;
          try {
            values[j] = file === undefined ? await load(key) : await readValueVersioned(key, file);
          } catch (error) {
            // One undecodable value must not cost the whole listing: it is left out,
            // and the per-name read that follows reports it as corrupt (counted absent).
            if (!(error instanceof CorruptStorageError)) throw error;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, slice.length) }, worker));
      const batch: StorageEntry[] = [];
      slice.forEach(({ key }, j) => {
        const read = values[j];
        if (read !== undefined) batch.push([key, read.value, read.version]);
      });
      return batch;
    };
    // The next batch is read while the caller works on this one: the reads run on the thread
    // pool (the other core) while the caller parses, instead of one waiting for the other.
    // At most two batches held; a read failure surfaces when its batch is awaited (or not at
    // all, if the caller stopped before it: hence the no-op handler).
    const start = (i: number) => {
      const reading = readBatch(keys.slice(i, i + BATCH));
      reading.catch(() => {});
      return reading;
    };
    let reading = keys.length > 0 ? start(0) : undefined;
    for (let i = 0; reading; i += BATCH) {
      const batch = await reading;
      reading = i + BATCH < keys.length ? start(i + BATCH) : undefined;
      if (batch.length > 0) yield batch;
    }
  }
}

/** One directory's keys under `prefix`: plain files, keys with a versions directory, and subdirectories to walk. */
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
    if (entry.isFile() && key.startsWith(prefix)) plain.push(key);
    else if (entry.isDirectory() && mayHold(`${key}/`, prefix)) pending.push({ dir: path.join(dir, entry.name), keyPrefix: `${key}/` });
  }
  return { plain, versioned };
}

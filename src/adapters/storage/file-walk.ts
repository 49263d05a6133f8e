/**
 * The walk of file storage's keys under a prefix, shared by `list`, the bulk
 * read (file-bulk.ts) and the versions listing (file-index.ts): where it
 * starts, how a directory is listed, and which subdirectories it enters.
 */
import type { Dirent } from 'node:fs';
import * as fs from 'node:fs/promises';
import { errorCode, wrap } from './file-io.js';
import type { FileTree } from './file-tree.js';

/** A directory to list and the key prefix of the names in it. */
export interface WalkDir {
  dir: string;
  keyPrefix: string;
}

/**
 * Where a walk of the keys under `prefix` starts: the directory of its
 * complete segments. Undefined when that directory does not exist (no keys);
 * a `StorageError` when a directory on the way is not one (a symbolic link…).
 */
export async function walkStart(tree: FileTree, prefix: string): Promise<WalkDir | undefined> {
  const keyPrefix = prefix.slice(0, prefix.lastIndexOf('/') + 1); // complete segments only
  const dir = keyPrefix ? tree.pathOf(keyPrefix.slice(0, -1)) : tree.root;
  try {
    if (!(await tree.checkDirs(dir, false))) return undefined;
  } catch (error) {
    wrap('list', dir, error);
  }
  return { dir, keyPrefix };
}

/** A directory's entries, streamed; none when it went (or is not a directory) since it was seen. */
export async function openListing(dir: string): Promise<AsyncIterable<Dirent>> {
  try {
    return await fs.opendir(dir, { bufferSize: 1024 });
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return (async function* () {})();
    wrap('list', dir, error);
  }
}

/** Whether keys under directory key `dirKey` (ending in `/`) can start with `prefix`: the walk enters it. */
export function mayHold(dirKey: string, prefix: string): boolean {
  return dirKey.startsWith(prefix) || prefix.startsWith(dirKey);
}

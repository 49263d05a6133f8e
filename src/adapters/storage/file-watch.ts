/**
 * Change notifications of file storage: inotify (`fs.watch`) on the
 * directory of a prefix. A plain write renames into that directory; a fenced
 * one touches the key's versions directory in it. Only keys directly in that
 * directory are reported. If the watch breaks, it is set up again and
 * `resync` told.
 */
import { watch as watchFs, type FSWatcher } from 'node:fs';
import { wrap } from './file-io.js';
import type { FileTree } from './file-tree.js';
import { VERSIONS } from './file-versions.js';
import { isValidKey } from './key.js';
import { guardWatcher, type StorageChange, type Unwatch } from './notify.js';

/** The directory `watch(prefix)` listens on: the deepest complete directory of the prefix. */
function watchedDir(tree: FileTree, prefix: string): { dir: string; dirKey: string } {
  const dirKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
  return { dir: dirKey ? tree.pathOf(dirKey.slice(0, -1)) : tree.root, dirKey };
}

/** Watch keys starting with `prefix` (already validated) for changes by any process on this host. */
export async function watchFileTree(tree: FileTree, prefix: string, onChange: (change: StorageChange) => void): Promise<Unwatch> {
  const deliver = guardWatcher(onChange);
  const { dir, dirKey } = watchedDir(tree, prefix);
  try {
    await tree.ensureRoot();
    await tree.checkDirs(dir, true);
  } catch (error) {
    wrap('watch', dir, error);
  }
  let watcher: FSWatcher | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const start = (): void => {
    watcher = watchFs(dir, { persistent: false }, (_event, filename) => {
      if (stopped || typeof filename !== 'string') return;
      const name = filename.endsWith(VERSIONS) ? filename.slice(0, -VERSIONS.length) : filename;
      const key = dirKey + name;
      if (isValidKey(key) && key.startsWith(prefix)) deliver({ type: 'store', key });
    });
    watcher.on('error', () => {
      watcher?.close();
      if (stopped) return;
      retry = setTimeout(() => {
        if (stopped) return;
        try {
          start();
          deliver({ type: 'resync' });
        } catch {
          watcher?.emit('error', new Error('watch failed'));
        }
      }, 1000);
    });
  };
  try {
    start();
  } catch (error) {
    wrap('watch', dir, error);
  }
  return async () => {
    stopped = true;
    if (retry) clearTimeout(retry);
    watcher?.close();
  };
}

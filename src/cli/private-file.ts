/**
 * Writing a file that holds key material (`certstate export --out`). A plain
 * `writeFile(file, data, { mode: 0o600 })` keeps the mode of a file that is
 * already there (a 0644 file stays world-readable, with the key inside) and
 * follows a symbolic link to wherever it points. Here the key goes to a new
 * file in the same directory, created exclusively and never through a link,
 * made exactly 0600 (whatever the umask), flushed to disk, and renamed over
 * the target: the target ends 0600, holds all of the data or none of it, and
 * a link at the path is replaced, not followed.
 */
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';

/** Write `data` to `file` as described above. Rejects with the file system's error, leaving no temp file behind. */
export async function writePrivateFile(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.certstate-${randomBytes(8).toString('hex')}.tmp`);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);
  const handle = await fs.open(temp, flags, 0o600);
  try {
    try {
      await handle.chmod(0o600); // open's mode went through the umask: set it exactly
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
  await syncDirectory(dir);
}

/** Make a rename in `dir` durable; file systems that cannot fsync a directory are let be. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, constants.O_RDONLY);
    await handle.sync();
  } catch {
    // EISDIR/EINVAL/EPERM on some platforms: the data itself is already synced
  } finally {
    await handle?.close();
  }
}

/**
 * `--storage` specifications: `file:DIR` (default `file:./certstate-data`),
 * a bare directory, `memory:` (a throw-away store, for demos),
 * `redis://…`/`rediss://…` (needs `ioredis`) and `postgres://…` (needs `pg`).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileStorage } from '../adapters/storage/file.js';
import { memoryStorage } from '../adapters/storage/memory.js';
import type { Storage } from '../types.js';
import { CliError, ExitCode, usageError } from './exit-codes.js';

/** The storage used when `--storage` and `CERTSTATE_STORAGE` are absent. */
export const DEFAULT_STORAGE_SPEC = 'file:./certstate-data';

/** Open the storage a spec names. Relative file paths resolve against `cwd`. */
export async function openStorage(spec: string, cwd: string): Promise<Storage> {
  if (spec === 'memory:' || spec === 'memory') return memoryStorage();
  if (/^rediss?:\/\//i.test(spec)) {
    const { redisStorage } = await optional(() => import('../adapters/storage/redis.js'), 'ioredis');
    return redisStorage({ url: spec });
  }
  if (/^postgres(ql)?:\/\//i.test(spec)) {
    const { postgresStorage } = await optional(() => import('../adapters/storage/postgres.js'), 'pg');
    return postgresStorage({ connectionString: spec });
  }
  if (/^file:\/\//i.test(spec)) return fileStorage(fileURLToPath(spec));
  if (/^file:/i.test(spec)) return fileStorage(path.resolve(cwd, spec.slice(5)));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw usageError(`unsupported --storage ${JSON.stringify(spec)}: use file:DIR, redis://…, postgres://… or memory:`);
  return fileStorage(path.resolve(cwd, spec));
}

/** Import an adapter whose driver is an optional peer dependency, with a clear message when it is missing. */
async function optional<T>(load: () => Promise<T>, driver: string): Promise<T> {
  try {
    return await load();
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && String(error).includes(driver)) {
      throw new CliError(ExitCode.FAILURE, `this storage needs the optional package ${driver}: npm install ${driver}`, { cause: error });
    }
    throw error;
  }
}

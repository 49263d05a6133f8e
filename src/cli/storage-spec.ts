/**
 * `--storage` specifications: `file:DIR` (default `file:./certstate-data`),
 * a bare directory, `memory:` (a throw-away store, for demos),
 * `redis://…`/`rediss://…` (needs `ioredis`; `?prefix=` picks the key prefix)
 * and `postgres://…` (needs `pg`; `?table=` picks the table).
 *
 * Read-only commands (`status`, `export`, `revoke`) open storage read-only:
 * PostgreSQL without its migration, so looking never creates tables (a
 * missing table then reads as an empty storage).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileStorage } from '../adapters/storage/file.js';
import { memoryStorage } from '../adapters/storage/memory.js';
import { ConfigError } from '../errors.js';
import type { Storage } from '../types.js';
import { CliError, ExitCode, usageError } from './exit-codes.js';

/** The storage used when `--storage` and `CERTSTATE_STORAGE` are absent. */
export const DEFAULT_STORAGE_SPEC = 'file:./certstate-data';

/** How a command uses the storage. */
export interface OpenStorageOptions {
  /** The command only reads: create nothing (no tables, no directories). */
  readOnly?: boolean;
}

/** Open the storage a spec names. Relative file paths resolve against `cwd`. */
export async function openStorage(spec: string, cwd: string, options: OpenStorageOptions = {}): Promise<Storage> {
  if (spec === 'memory:' || spec === 'memory') return memoryStorage();
  if (/^rediss?:\/\//i.test(spec)) {
    const { redisStorage } = await optional(() => import('../adapters/storage/redis.js'), 'ioredis');
    const { url, param: prefix } = takeParam(spec, 'prefix');
    return configured(() => redisStorage({ url, ...(prefix !== undefined ? { prefix } : {}) }));
  }
  if (/^postgres(ql)?:\/\//i.test(spec)) {
    const { postgresStorage } = await optional(() => import('../adapters/storage/postgres.js'), 'pg');
    const { url, param: table } = takeParam(spec, 'table');
    const storage = configured(() => postgresStorage({ connectionString: url, ...(table !== undefined ? { table } : {}), autoMigrate: !options.readOnly }));
    return options.readOnly ? missingTableIsEmpty(storage) : storage;
  }
  if (/^file:\/\//i.test(spec)) return fileStorage(fileURLToPath(spec));
  if (/^file:/i.test(spec)) return fileStorage(path.resolve(cwd, spec.slice(5)));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw usageError(`unsupported --storage ${JSON.stringify(spec)}: use file:DIR, redis://…, postgres://… or memory:`);
  return fileStorage(path.resolve(cwd, spec));
}

/** Take certstate's own query parameter out of a driver URL (the URL is left untouched without it). */
function takeParam(spec: string, name: string): { url: string; param: string | undefined } {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw usageError(`--storage is not a valid URL`);
  }
  const param = url.searchParams.get(name);
  if (param === null) return { url: spec, param: undefined };
  url.searchParams.delete(name);
  return { url: url.toString(), param };
}

/** A storage factory's `ConfigError` (a bad table name, prefix) is a usage error. */
function configured<T>(create: () => T): T {
  try {
    return create();
  } catch (error) {
    if (error instanceof ConfigError) throw usageError(`--storage: ${error.message}`);
    throw error;
  }
}

/** PostgreSQL's "undefined_table": certstate never wrote to this database (or this table). */
const UNDEFINED_TABLE = '42P01';

/** For read-only commands on PostgreSQL: reads of a table that does not exist find nothing. */
function missingTableIsEmpty(storage: Storage): Storage {
  const missing = (error: unknown) => (error as { cause?: { code?: unknown } } | undefined)?.cause?.code === UNDEFINED_TABLE;
  return new Proxy(storage, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (prop !== 'list' && prop !== 'load' && prop !== 'stat') return value.bind(target);
      return async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (error) {
          if (missing(error)) return prop === 'list' ? [] : undefined;
          throw error;
        }
      };
    },
  });
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

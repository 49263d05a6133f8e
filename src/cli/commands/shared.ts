/** Flags and helpers every storage-backed command shares. */
import type { Storage } from '../../types.js';
import type { CliIo } from '../io.js';
import { DEFAULT_STORAGE_SPEC, openStorage, type OpenStorageOptions } from '../storage-spec.js';

/** `--storage SPEC` (default `$CERTSTATE_STORAGE`, then `file:./certstate-data`). */
export const STORAGE_OPTION = { storage: { type: 'string' } } as const;

/** Usage line of `--storage`. */
export const STORAGE_USAGE = `  --storage SPEC          file:DIR (default file:./certstate-data), redis://…[?prefix=P],
                          postgres://…[?table=T], memory: (or set CERTSTATE_STORAGE)`;

/** Open the storage the flags (or environment) name, run `body`, close it. */
export function withStorage<T>(io: CliIo, spec: string | undefined, body: (storage: Storage) => Promise<T>): Promise<T> {
  return using(io, spec, {}, body);
}

/** {@link withStorage} for commands that only read: nothing is created (no PostgreSQL tables). */
export function withReadOnlyStorage<T>(io: CliIo, spec: string | undefined, body: (storage: Storage) => Promise<T>): Promise<T> {
  return using(io, spec, { readOnly: true }, body);
}

async function using<T>(io: CliIo, spec: string | undefined, options: OpenStorageOptions, body: (storage: Storage) => Promise<T>): Promise<T> {
  const storage = await openStorage(spec ?? io.env.CERTSTATE_STORAGE ?? DEFAULT_STORAGE_SPEC, io.cwd, options);
  try {
    return await body(storage);
  } finally {
    await storage.close?.();
  }
}

/** Flags and helpers every storage-backed command shares. */
import type { Storage } from '../../types.js';
import type { CliIo } from '../io.js';
import { DEFAULT_STORAGE_SPEC, openStorage } from '../storage-spec.js';

/** `--storage SPEC` (default `$CERTSTATE_STORAGE`, then `file:./certstate-data`). */
export const STORAGE_OPTION = { storage: { type: 'string' } } as const;

/** Usage line of `--storage`. */
export const STORAGE_USAGE = `  --storage SPEC          file:DIR (default file:./certstate-data), redis://…, postgres://…, memory:
                          (or set CERTSTATE_STORAGE)`;

/** Open the storage the flags (or environment) name, run `body`, close it. */
export async function withStorage<T>(io: CliIo, spec: string | undefined, body: (storage: Storage) => Promise<T>): Promise<T> {
  const storage = await openStorage(spec ?? io.env.CERTSTATE_STORAGE ?? DEFAULT_STORAGE_SPEC, io.cwd);
  try {
    return await body(storage);
  } finally {
    await storage.close?.();
  }
}

/** Name arguments: normalised as the engine does, or a usage error. */
import { InvalidNameError } from '../errors.js';
import { normalizeName } from '../names.js';
import { usageError } from './exit-codes.js';

/** Normalise a NAME argument (wildcards and IP literals allowed, as for managed names). */
export function nameArg(raw: string): string {
  try {
    return normalizeName(raw, { allowWildcard: true, allowIp: true });
  } catch (error) {
    if (error instanceof InvalidNameError) throw usageError(error.message);
    throw error;
  }
}

/** Name arguments: normalised as the engine does, or a usage error. */
import { ConfigError, InvalidNameError } from '../errors.js';
import { managedCertificates } from '../engine/managed-names.js';
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

/**
 * CERT arguments: each a NAME, or `NAME,NAME,…` for ONE certificate with
 * several names (a comma is in no DNS name), as the engine's `names` takes
 * them: strings, or arrays of names (the first is the key). Mistakes the
 * engine would refuse (a name in two arguments, one its own wildcard covers)
 * are usage errors here.
 */
export function certificateArgs(raws: readonly string[]): Array<string | string[]> {
  const entries = raws.map((raw) => (raw.includes(',') ? raw.split(',').map(nameArg) : nameArg(raw)));
  try {
    managedCertificates(entries, 'NAME');
  } catch (error) {
    if (error instanceof ConfigError) throw usageError(error.message.replace(/^createCertEngine: /, ''));
    throw error;
  }
  return entries;
}

/** The key of a CERT argument: its first name. */
export const certificateKey = (entry: string | readonly string[]): string => (typeof entry === 'string' ? entry : entry[0]!);

/** How a CERT argument is shown: `example.com` or `example.com (with *.example.com)`. */
export const certificateLabel = (entry: string | readonly string[]): string =>
  typeof entry === 'string' || entry.length === 1 ? certificateKey(entry) : `${entry[0]} (with ${entry.slice(1).join(', ')})`;

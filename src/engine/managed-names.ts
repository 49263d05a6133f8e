/**
 * Managed names as certificates: each entry of `names` is one certificate —
 * a string for that name alone, an array for ONE certificate covering all of
 * its names (an apex and its wildcard, `['example.com', '*.example.com']`).
 *
 * A group is one actor, one key, one lock and one stored record, all keyed by
 * its first name; its other names are aliases of that record (residency.ts),
 * so a handshake for any of them (or for a name one of its wildcards covers)
 * finds the group in one `Map` lookup.
 *
 * Mistakes are `ConfigError`s at construction: an empty group, a name in two
 * entries, a name its own group's wildcard already covers (CAs refuse such
 * orders as redundant), more names than a CA puts in one certificate.
 */
import { certificateCoversName } from '../certs.js';
import { ConfigError } from '../errors.js';
import { normalizeName } from '../names.js';

/** One entry of `names`: a name, or the names of one certificate. */
export type ManagedEntry = string | readonly string[];

/** Most names in one certificate: Let's Encrypt's limit (100 SANs). */
export const MAX_NAMES_PER_CERTIFICATE = 100;

/**
 * The certificates `entries` describe, normalised: each a list of names whose
 * first is the key. A plain name given twice counts once (as before groups
 * existed); a name of a group may appear nowhere else. `taken` says whether a
 * group's name already belongs to another certificate (for `manage()`).
 */
export function managedCertificates(
  entries: readonly ManagedEntry[],
  path = 'names',
  taken: (name: string, group: readonly string[]) => boolean = () => false,
): string[][] {
  const out: string[][] = [];
  /** Every name seen, and whether it came from a group. */
  const seen = new Map<string, { group: boolean; at: string }>();
  entries.forEach((entry, i) => {
    const at = `${path}[${i}]`;
    const group = typeof entry !== 'string';
    const raw = group ? entry : [entry];
    if (group && raw.length === 0) throw new ConfigError(`createCertEngine: \`${at}\` is an empty group: give the names of one certificate, e.g. ['example.com', '*.example.com']`);
    if (raw.length > MAX_NAMES_PER_CERTIFICATE) throw new ConfigError(`createCertEngine: \`${at}\` has ${raw.length} names; one certificate holds at most ${MAX_NAMES_PER_CERTIFICATE}`);
    const names = raw.map((n) => normalizeName(n, { allowWildcard: true, allowIp: true }));
    const twice = names.find((n, j) => names.indexOf(n) !== j);
    if (twice !== undefined) throw new ConfigError(`createCertEngine: \`${at}\` names ${JSON.stringify(twice)} twice`);
    for (const name of names) {
      const before = seen.get(name);
      if (before && !group && !before.group) return; // a plain name repeated: one certificate, as before
      if (before) throw new ConfigError(`createCertEngine: ${JSON.stringify(name)} is in \`${before.at}\` and in \`${at}\`: a name belongs to one certificate`);
      if (group && taken(name, names)) throw new ConfigError(`createCertEngine: ${JSON.stringify(name)} in \`${at}\` is already managed: a name belongs to one certificate`);
    }
    for (const name of names) seen.set(name, { group, at });
    if (group) assertNotRedundant(names, at);
    out.push(names);
  });
  return out;
}

/** No name of a group may be covered by another of its wildcards (`*.example.com` and `a.example.com`). */
function assertNotRedundant(names: readonly string[], at: string): void {
  const wildcards = names.filter((n) => n.startsWith('*.'));
  if (wildcards.length === 0) return;
  for (const name of names) {
    if (name.startsWith('*.')) continue;
    const covering = wildcards.find((w) => certificateCoversName({ names: [w] }, name));
    if (covering) throw new ConfigError(`createCertEngine: \`${at}\` has ${JSON.stringify(name)}, which its ${JSON.stringify(covering)} already covers (CAs refuse redundant names)`);
  }
}

/** Every name of `entries`, flattened (for checks such as `defaultName`). */
export function allNames(entries: readonly ManagedEntry[]): string[] {
  return entries.flatMap((entry) => (typeof entry === 'string' ? [entry] : [...entry]));
}

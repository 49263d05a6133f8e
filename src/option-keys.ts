/**
 * Unknown option keys are mistakes: in JavaScript nothing else would catch
 * `name` for `names`, and the option would be silently ignored. Every
 * factory that takes options refuses keys it does not know, naming the
 * nearest known one.
 */
import { ConfigError } from './errors.js';

/** The keys of an options type, written once: a missing or an extra key is a compile error. */
export function optionKeys<T>(keys: { readonly [K in keyof Required<T>]: true }): readonly string[] {
  return Object.keys(keys);
}

/**
 * Refuse keys of `object` that are not in `known`, suggesting the nearest
 * known key (edit distance ≤ 2, or a case-insensitive match): a typo in
 * JavaScript must not be an option silently ignored.
 */
export function checkKeys(object: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(object)) {
    if (known.includes(key)) continue;
    const nearest = nearestKey(key, known);
    const hint = nearest ? `; did you mean \`${nearest}\`?` : `; known options: ${known.join(', ')}`;
    throw new ConfigError(`${where}: unknown option \`${key.slice(0, 100)}\`${hint}`);
  }
}

function nearestKey(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  let best: { key: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = candidate.toLowerCase() === lower ? 0 : editDistance(lower, candidate.toLowerCase());
    if (!best || distance < best.distance) best = { key: candidate, distance };
  }
  // A suffix like `handshakeTimeoutMs` for `handshakeTimeout` is a near miss too.
  const prefixed = known.find((k) => lower.startsWith(k.toLowerCase()) || k.toLowerCase().startsWith(lower));
  if (best && best.distance <= Math.min(2, Math.floor(key.length / 3))) return best.key;
  return prefixed;
}

/** Edit distance counting a swap of two neighbours as one edit (`burts` → `burst`); option names are short, so the table is nothing. */
function editDistance(a: string, b: string): number {
  if (a.length > 100 || b.length > 100) return Infinity;
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}


/**
 * Storage key validation, shared by every storage backend.
 *
 * Keys reach storage from SNI values (through storage-keys.ts), ACME tokens and
 * account ids. Validating them here, in one strict place, is what guarantees
 * that no key can escape a file storage's root or smuggle odd bytes into a
 * Redis key or SQL text, whatever the backend.
 */
import { InvalidKeyError } from '../../errors.js';

/** Longest allowed key, in characters. */
export const MAX_KEY_LENGTH = 1024;
/** Longest allowed segment; leaves room under NAME_MAX (255) for file storage's suffixes. */
export const MAX_SEGMENT_LENGTH = 200;

const KEY_CHARS = /^[A-Za-z0-9._/-]*$/;

/** Why `segment` is not a valid complete key segment, or `undefined` if it is. */
function segmentProblem(segment: string): string | undefined {
  if (segment.length === 0) return 'empty segment (leading, trailing or double slash)';
  if (segment === '.' || segment === '..') return `"${segment}" segment not allowed`;
  if (segment.length > MAX_SEGMENT_LENGTH) return `segment longer than ${MAX_SEGMENT_LENGTH} characters`;
  return undefined;
}

/** Why the characters of `value` are not allowed, or `undefined` if they all are. */
function charsetProblem(value: string): string | undefined {
  if (KEY_CHARS.test(value)) return undefined;
  const bad = [...value].find((c) => !KEY_CHARS.test(c));
  return `character ${JSON.stringify(bad)} not allowed (only A-Z a-z 0-9 . _ - and / between segments)`;
}

/**
 * Throw `InvalidKeyError` unless `key` is `/`-separated segments of
 * `[A-Za-z0-9._-]`, each 1..200 characters, none `.` or `..`, with no leading
 * or trailing slash and at most 1024 characters in all.
 */
export function assertValidKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidKeyError(String(key), 'not a string');
  if (key.length === 0) throw new InvalidKeyError(key, 'empty');
  if (key.length > MAX_KEY_LENGTH) throw new InvalidKeyError(key, `longer than ${MAX_KEY_LENGTH} characters`);
  const chars = charsetProblem(key);
  if (chars) throw new InvalidKeyError(key, chars);
  for (const segment of key.split('/')) {
    const problem = segmentProblem(segment);
    if (problem) throw new InvalidKeyError(key, problem);
  }
}

/** Whether `key` passes `assertValidKey` (for skipping foreign names, e.g. when listing files). */
export function isValidKey(key: string): boolean {
  try {
    assertValidKey(key);
    return true;
  } catch {
    return false;
  }
}

/**
 * Throw `InvalidKeyError` unless `prefix` is usable with `Storage.list`: empty,
 * or complete valid segments each followed by `/`, optionally ending in a
 * partial segment (`certificates/`, `certificates/exa`, `cert`).
 */
export function assertValidPrefix(prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string') throw new InvalidKeyError(String(prefix), 'prefix is not a string');
  if (prefix.length === 0) return;
  if (prefix.length > MAX_KEY_LENGTH) throw new InvalidKeyError(prefix, `prefix longer than ${MAX_KEY_LENGTH} characters`);
  const chars = charsetProblem(prefix);
  if (chars) throw new InvalidKeyError(prefix, chars);
  const segments = prefix.split('/');
  const partial = segments.pop() ?? '';
  for (const segment of segments) {
    const problem = segmentProblem(segment);
    if (problem) throw new InvalidKeyError(prefix, problem);
  }
  // The partial segment is only ever compared as a string, never used as a path.
  if (partial.length > MAX_SEGMENT_LENGTH) {
    throw new InvalidKeyError(prefix, `segment longer than ${MAX_SEGMENT_LENGTH} characters`);
  }
}

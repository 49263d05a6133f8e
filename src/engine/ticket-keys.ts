/**
 * The cluster's TLS session-ticket encryption keys (STEKs) as stored, and
 * what one process does with them at a given time. Pure: no I/O, no clock of
 * its own, so the schedule is tested with plain numbers.
 *
 * A key set is a short list of 48-byte keys (Node's `ticketKeys` layout:
 * 16-byte name, 16-byte HMAC secret, 16-byte AES key), each with the time it
 * starts encrypting (`activeFrom`), ascending. At time `now`:
 * - the **encrypting** key is the newest one whose `activeFrom` has come;
 * - a key **decrypts** until `overlapMs` after its successor took over, and
 *   the next key (published one interval ahead) decrypts already, so a
 *   process whose clock or timer is a little behind still resumes the
 *   tickets of a process that switched first;
 * - the set **needs rotation** when no next key is published yet.
 */
import { CorruptStorageError } from '../errors.js';

/** Bytes of one key, as Node's `ticketKeys` takes it: name (16) ‖ HMAC secret (16) ‖ AES key (16). */
export const TICKET_KEY_BYTES = 48;
/** Most keys kept in a set (a hostile or runaway set cannot grow past it). */
export const MAX_TICKET_KEYS = 16;
/** Longest stored set read (about 30 keys' worth): anything larger is corrupt, not parsed. */
const MAX_STORED_CHARS = 4096;
const SET_VERSION = 1;
const BASE64_KEY = /^[A-Za-z0-9+/]{64}$/;

/** One session-ticket key and when it starts encrypting. */
export interface TicketKey {
  /** 48 bytes: name ‖ HMAC secret ‖ AES key. Never logged. */
  readonly key: Buffer;
  /** When it becomes the encrypting key, ms since epoch. */
  readonly activeFrom: number;
}

/** The schedule every process of a cluster follows. */
export interface TicketSchedule {
  /** A new key takes over encryption this often, ms. */
  rotationIntervalMs: number;
  /** How long a key still decrypts after its successor took over, ms. */
  overlapMs: number;
}

/** One decrypting key; `renew`: tickets it opens get a fresh ticket under the encrypting key. */
export interface DecryptingKey {
  readonly key: Buffer;
  readonly renew: boolean;
}

/** What a process uses at one moment. */
export interface TicketKeyView {
  encrypting: Buffer;
  decrypting: DecryptingKey[];
  /** The next time the view changes (a key takes over or retires), if any. */
  nextChangeAt: number | undefined;
  /** No next key is published: someone must add one (under the storage lock). */
  needsRotation: boolean;
}

/** The time key `i` stops decrypting (`Infinity` for the newest). */
function retiresAt(keys: readonly TicketKey[], i: number, overlapMs: number): number {
  const successor = keys[i + 1];
  return successor ? successor.activeFrom + overlapMs : Infinity;
}

/** Index of the encrypting key: the newest that has come, or the earliest when none has (a clock behind the writer's). */
function encryptingIndex(keys: readonly TicketKey[], now: number): number {
  let index = 0;
  for (let i = 0; i < keys.length; i++) if (keys[i]!.activeFrom <= now) index = i;
  return index;
}

/** What to encrypt and decrypt with at `now`. `keys` must be non-empty and ascending. */
export function viewAt(keys: readonly TicketKey[], now: number, schedule: TicketSchedule): TicketKeyView {
  const current = encryptingIndex(keys, now);
  const decrypting: DecryptingKey[] = [];
  let nextChangeAt: number | undefined;
  const consider = (at: number) => {
    if (at > now && at !== Infinity && (nextChangeAt === undefined || at < nextChangeAt)) nextChangeAt = at;
  };
  keys.forEach((k, i) => {
    const retires = retiresAt(keys, i, schedule.overlapMs);
    if (retires > now) decrypting.push({ key: k.key, renew: i < current });
    consider(k.activeFrom);
    consider(retires);
  });
  return {
    encrypting: keys[current]!.key,
    decrypting,
    nextChangeAt,
    needsRotation: !keys.some((k) => k.activeFrom > now),
  };
}

/**
 * The set after a rotation at `now`: retired keys dropped; a new encrypting
 * key from now on if the current one is overdue (or there is none); and a
 * next key one interval after the current one took over. Returns the same
 * array when nothing needs doing.
 */
export function rotate(keys: readonly TicketKey[], now: number, schedule: TicketSchedule, newKey: () => Buffer): TicketKey[] {
  const kept = keys.filter((_, i) => retiresAt(keys, i, schedule.overlapMs) > now);
  if (kept.some((k) => k.activeFrom > now)) return kept.length === keys.length ? (keys as TicketKey[]) : kept;
  const current = kept.length > 0 ? kept[encryptingIndex(kept, now)]! : undefined;
  let currentFrom = current?.activeFrom ?? now;
  // Every process was away longer than an interval: the stale key must not encrypt on.
  if (!current || currentFrom + schedule.rotationIntervalMs <= now) {
    kept.push({ key: newKey(), activeFrom: now });
    currentFrom = now;
  }
  kept.push({ key: newKey(), activeFrom: currentFrom + schedule.rotationIntervalMs });
  return kept.slice(-MAX_TICKET_KEYS);
}

/** The stored form: `{"version":1,"keys":[{"activeFrom":…,"key":"<base64>"}]}`. */
export function serializeTicketKeys(keys: readonly TicketKey[]): string {
  return JSON.stringify({ version: SET_VERSION, keys: keys.map((k) => ({ activeFrom: k.activeFrom, key: k.key.toString('base64') })) });
}

/**
 * Parse a stored set strictly: size-bounded, 1–16 keys of exactly 48 bytes,
 * `activeFrom` strictly ascending, no key name twice. Throws
 * `CorruptStorageError` (which never quotes the value: it holds secrets).
 */
export function parseTicketKeys(storageKey: string, raw: string): TicketKey[] {
  const corrupt = (reason: string) => new CorruptStorageError(storageKey, reason);
  if (raw.length > MAX_STORED_CHARS) throw corrupt(`larger than ${MAX_STORED_CHARS} characters`);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw corrupt('not JSON (truncated?)');
  }
  const set = value as { version?: unknown; keys?: unknown } | null;
  if (typeof set !== 'object' || set === null || set.version !== SET_VERSION) throw corrupt('unknown format or version');
  if (!Array.isArray(set.keys) || set.keys.length === 0 || set.keys.length > MAX_TICKET_KEYS) throw corrupt(`needs 1 to ${MAX_TICKET_KEYS} keys`);
  const names = new Set<string>();
  const keys: TicketKey[] = [];
  for (const entry of set.keys as unknown[]) {
    const { activeFrom, key } = (entry ?? {}) as { activeFrom?: unknown; key?: unknown };
    if (typeof activeFrom !== 'number' || !Number.isSafeInteger(activeFrom) || activeFrom < 0) throw corrupt('a key has no valid activeFrom');
    if (typeof key !== 'string' || !BASE64_KEY.test(key)) throw corrupt(`a key is not ${TICKET_KEY_BYTES} bytes of base64`);
    const bytes = Buffer.from(key, 'base64');
    const name = bytes.subarray(0, 16).toString('hex');
    if (names.has(name)) throw corrupt('two keys share a name');
    if (keys.length > 0 && activeFrom <= keys.at(-1)!.activeFrom) throw corrupt('keys are not in ascending activeFrom order');
    names.add(name);
    keys.push({ key: bytes, activeFrom });
  }
  return keys;
}

/**
 * The start-up index's format (startup-index.ts reads and writes it): a
 * header line `{"format":"certstate-startup-index","v":1,"written":ms}`, one
 * line per name `[name, version, issuerId, stored metadata]`, and an end line
 * `{"end":<lines>}` that counts them, so a truncated index is told. Parsing
 * is exact: anything off the schema is a `BadIndex`, and the whole index is
 * then ignored (never a part of it trusted).
 */
import type { CertificateMeta } from '../types.js';
import { readStoredMeta, storedMetaOf } from './stored-meta.js';

const FORMAT = 'certstate-startup-index';
/** The format of the index; an index of another version is ignored (with the one warning). */
export const INDEX_VERSION = 1;
/** Longest line read (a certificate of many names is long; ~350 B is usual). */
export const MAX_LINE = 64 * 1024;
const NAME = /^[a-z0-9*._:-]{1,253}$/;
/** A value's version as storages give it: file storage four parts (size, inode, times), PostgreSQL two (xmin, µs). */
const VERSION = /^[0-9a-z]{1,16}(?:\.[0-9a-z]{1,16}){1,3}$/;
const MAX_ISSUER_ID = 256;

/** A name's line: its certificate's metadata and the version of the stored value it was read from. */
export type IndexEntry = { version: string; meta: CertificateMeta };

/** Why an index is not used (the one warning says it). */
export class BadIndex extends Error {}

/** The index's first line: its format and version, and when it was written. */
export function indexHeader(now: number): string {
  return JSON.stringify({ format: FORMAT, v: INDEX_VERSION, written: now });
}

/** A name's line: the metadata of its certificate as read from the stored value at `version`. */
export function indexLine(name: string, version: string, meta: CertificateMeta): string {
  return JSON.stringify([name, version, meta.issuerId, storedMetaOf(meta)]);
}

/** The last line: how many names the index holds (a truncated index is told by it). */
export function indexEnd(lines: number): string {
  return JSON.stringify({ end: lines });
}

export function checkHeader(value: unknown): void {
  const v = value as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v.format !== FORMAT) throw new BadIndex('not a start-up index');
  if (v.v !== INDEX_VERSION) throw new BadIndex(`format version ${JSON.stringify(v.v)}, not ${INDEX_VERSION}`);
}

export function endOf(value: unknown): number {
  const v = value as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null || Object.keys(v).length !== 1 || !Number.isSafeInteger(v.end)) throw new BadIndex('a line is not an entry');
  return v.end as number;
}

/** One line: `[name, version, issuerId, stored metadata]`, exactly. */
export function parseEntry(value: unknown[]): [string, IndexEntry] {
  const [name, version, issuerId, stored] = value;
  if (value.length !== 4 || typeof name !== 'string' || !NAME.test(name)) throw new BadIndex('a line does not name a valid name');
  if (typeof version !== 'string' || !VERSION.test(version)) throw new BadIndex(`${name}: not a valid version`);
  if (typeof issuerId !== 'string' || issuerId.length === 0 || issuerId.length > MAX_ISSUER_ID) throw new BadIndex(`${name}: not a valid issuer id`);
  const meta = readStoredMeta(stored, issuerId);
  if (!meta) throw new BadIndex(`${name}: its metadata is not exactly the schema`);
  return [name, { version, meta }];
}

/**
 * Certificate metadata stored beside the certificate (the `meta` field of a
 * stored unit, written by `serializeStoredCertificate` from the certificate
 * itself), read back without parsing the certificate — for the start-up
 * scan's sleeping decision only.
 *
 * Why it may be trusted that far: it is written by the same atomic `store`
 * as the certificate it describes, computed from that certificate by the
 * writer, so with several processes writing no reader can see one's
 * certificate beside another's metadata. What is NOT trusted: a value that
 * fails the strict schema below (the certificate is then parsed, as for a
 * unit without metadata), nor anything served. Metadata read this way is
 * marked (`isUnverified`), and every path that serves the certificate or runs
 * its actor parses the certificate first and lets the parsed values win
 * (loads.ts).
 */
import { intern } from '../certs/bundle.js';
import type { CertificateMeta } from '../types.js';

/** Metadata read from storage, not yet checked against its certificate (a WeakSet: it holds nothing alive). */
const unverified = new WeakSet<CertificateMeta>();

/** Whether `meta` was read from storage and its certificate not parsed since. */
export function isUnverified(meta: CertificateMeta | undefined): boolean {
  return meta !== undefined && unverified.has(meta);
}

/** `meta` agrees with its certificate, parsed since: no longer unverified. */
export function markVerified(meta: CertificateMeta): void {
  unverified.delete(meta);
}

/**
 * The version (`StartupIndexStorage.versions`) of the stored value a
 * metadata object was read from, when the read knew it: what the start-up
 * index may record beside it. Keyed by the object, so a certificate the
 * engine replaces (a renewal, a parse on waking) has none until read again.
 */
const versions = new WeakMap<CertificateMeta, string>();
/** Metadata taken from the start-up index (a disagreement with its certificate is a change, not corruption). */
const fromIndex = new WeakSet<CertificateMeta>();

/** The version of the stored value `meta` was read from, if known. */
export function storedVersionOf(meta: CertificateMeta | undefined): string | undefined {
  return meta === undefined ? undefined : versions.get(meta);
}

/** `meta` was read from the stored value at `version`. */
export function noteStoredVersion(meta: CertificateMeta, version: string): void {
  versions.set(meta, version);
}

/** `meta` comes from the start-up index, not from its stored value. */
export function markFromIndex(meta: CertificateMeta): void {
  fromIndex.add(meta);
}

/** Whether `meta` came from the start-up index. */
export function isFromIndex(meta: CertificateMeta | undefined): boolean {
  return meta !== undefined && fromIndex.has(meta);
}

/**
 * How the stored metadata is computed. A version that computes it otherwise
 * (say, prints issuer names differently) writes another `v`: its metadata is
 * then not compared with ours but ignored, the certificate parsed, without a
 * warning — a mixed-version cluster is not a corrupt storage. Absent: 1.
 */
export const META_VERSION = 1;

/** Whether stored metadata (an object) was computed by another version (see META_VERSION): the certificate is parsed, silently. */
export function isOtherMetaVersion(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = (value as Record<string, unknown>).v;
  return v !== undefined && v !== META_VERSION;
}

/** The fields stored, in the order `leafMetaFromDer` builds them (one hidden class for both), and the version. */
const FIELDS = new Set(['fingerprint', 'serial', 'names', 'notBefore', 'notAfter', 'issuer', 'ariCertId', 'v']);
const FINGERPRINT = /^[0-9A-F]{2}(?::[0-9A-F]{2}){31}$/;
const SERIAL = /^-?[0-9A-F]{1,160}$/;
/** DNS names (lower case, maybe a wildcard) and IP literals in canonical form; coverage is checked by the reader. */
const NAME = /^[a-z0-9*._:-]{1,253}$/;
const ARI_CERT_ID = /^[A-Za-z0-9_-]{1,256}\.[A-Za-z0-9_-]{1,256}$/;
const MAX_NAMES = 1000;
const MAX_ISSUER = 4096;

/** The `meta` field written for a certificate's metadata (no issuer id: the unit holds it). */
export function storedMetaOf(meta: CertificateMeta): Record<string, unknown> {
  const { fingerprint, serial, names, notBefore, notAfter, issuer, ariCertId } = meta;
  return { fingerprint, serial, names, notBefore, notAfter, issuer, ...(ariCertId !== undefined ? { ariCertId } : {}) };
}

/**
 * The stored metadata as `CertificateMeta`, marked unverified; undefined when
 * it is not exactly the schema (a missing or extra field, a value of the
 * wrong type, shape or size): the caller then parses the certificate.
 * `name`: the name it is read for; a certificate of that name alone holds
 * the caller's string instead of its own copy (one string a name, not two).
 */
export function readStoredMeta(value: unknown, issuerId: string, name?: string): CertificateMeta | undefined {
  const v = schemaChecked(value);
  if (v === undefined) return undefined;
  const { fingerprint, serial, names, notBefore, notAfter, issuer, ariCertId } = v;
  // The array was just parsed from the stored value: ours to fill before the metadata is built.
  if (names.length === 1 && names[0] === name) names[0] = name;
  // Every property in the literal, in leafMetaFromDer's order (same hidden class, no property array).
  const meta: CertificateMeta = {
    fingerprint,
    serial,
    names: names as string[],
    notBefore,
    notAfter,
    issuer: intern(issuer),
    issuerId: intern(issuerId),
    ...(ariCertId !== undefined ? { ariCertId } : {}),
  };
  unverified.add(meta);
  return meta;
}

/** Stored metadata's fields, as the schema has them: the certificate's metadata but the issuer id (stored beside it). */
type StoredMetaFields = Omit<CertificateMeta, 'issuerId'>;

/** Stored metadata when it is exactly the schema (the parsed value itself: no object made), else undefined. */
function schemaChecked(value: unknown): StoredMetaFields | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  for (const key in v) if (!FIELDS.has(key)) return undefined;
  const { fingerprint, serial, names, notBefore, notAfter, issuer, ariCertId } = v;
  if (v.v !== undefined && v.v !== META_VERSION) return undefined;
  if (typeof fingerprint !== 'string' || !FINGERPRINT.test(fingerprint)) return undefined;
  if (typeof serial !== 'string' || !SERIAL.test(serial)) return undefined;
  if (!Array.isArray(names) || names.length === 0 || names.length > MAX_NAMES) return undefined;
  for (const name of names) if (typeof name !== 'string' || !NAME.test(name)) return undefined;
  if (!isTime(notBefore) || !isTime(notAfter) || notBefore > notAfter) return undefined;
  if (typeof issuer !== 'string' || issuer.length === 0 || issuer.length > MAX_ISSUER) return undefined;
  if (ariCertId !== undefined && (typeof ariCertId !== 'string' || !ARI_CERT_ID.test(ariCertId))) return undefined;
  return v as unknown as StoredMetaFields;
}

/**
 * Whether stored metadata is exactly the schema and describes the certificate
 * `meta` describes, in every field `metaDifferences` compares, without making
 * a `CertificateMeta`: for the start-up index's check, which reads a file only
 * to learn that its certificate did not change (a `CertificateMeta` made there
 * for every file of a restore from backup would be made in old space, its
 * allocation site pretenured by the names' long-lived ones, and die there).
 */
export function storedMetaAgrees(value: unknown, issuerId: string, meta: CertificateMeta): boolean {
  const v = schemaChecked(value);
  if (v === undefined || v.names.length !== meta.names.length) return false;
  for (let i = 0; i < v.names.length; i++) if (v.names[i] !== meta.names[i]) return false;
  return (
    v.fingerprint === meta.fingerprint &&
    v.serial === meta.serial &&
    v.notBefore === meta.notBefore &&
    v.notAfter === meta.notAfter &&
    v.issuer === meta.issuer &&
    issuerId === meta.issuerId &&
    v.ariCertId === meta.ariCertId
  );
}

/** The fields where parsed metadata differs from stored metadata (empty: they agree). */
export function metaDifferences(stored: CertificateMeta, parsed: CertificateMeta): string[] {
  const differ: string[] = [];
  if (stored.fingerprint !== parsed.fingerprint) differ.push('fingerprint');
  if (stored.serial !== parsed.serial) differ.push('serial');
  if (stored.names.length !== parsed.names.length || stored.names.some((n, i) => n !== parsed.names[i])) differ.push('names');
  if (stored.notBefore !== parsed.notBefore) differ.push('notBefore');
  if (stored.notAfter !== parsed.notAfter) differ.push('notAfter');
  if (stored.issuer !== parsed.issuer) differ.push('issuer');
  if (stored.issuerId !== parsed.issuerId) differ.push('issuerId');
  if (stored.ariCertId !== parsed.ariCertId) differ.push('ariCertId');
  return differ;
}

function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

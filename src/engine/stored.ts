/**
 * What is stored per name, in its on-storage format with strict parsing: the
 * certificate (chain, key, issuer id and the certificate's metadata: one JSON
 * value, written with one atomic `store`, so a crash can never leave a
 * certificate beside the wrong key or the wrong metadata) and the failure
 * record (the backoff, so a restart keeps it).
 *
 * The metadata (`meta`, since issue 14) is an optional field of the same
 * format version: readers that predate it ignore it, so processes of several
 * versions can share one storage; units without it are parsed as before.
 */
import { parseCertificateBundle, type ParseCertificateOptions } from '../certs.js';
import { CorruptStorageError, isRetryAfterRecord } from '../errors.js';
import type { FailureRecord } from '../machines/certificate.js';
import { MAX_KEPT_ORDERS } from '../machines/floor.js';
import type { CertificateBundle, CertificateMeta, ErrorInfo } from '../types.js';
import { isOtherMetaVersion, readStoredMeta, storedMetaAgrees, storedMetaOf } from './stored-meta.js';

const FORMAT_VERSION = 1;
/** Offsets to the storage clock that differ by less than this are the same clock, measured twice. */
const SKEW_NOISE_MS = 1000;

interface StoredCertificate {
  version: number;
  issuerId: string;
  certificatePem: string;
  privateKeyPem: string;
  storedAt: number;
  /** The certificate's metadata (stored-meta.ts), computed from `certificatePem` when it was written. */
  meta?: Record<string, unknown>;
}

/**
 * Serialise a certificate, its key and its issuer id for storage, with the
 * certificate's metadata computed here from the certificate itself (only
 * `meta.issuerId` is taken from the caller), so what is stored beside a
 * certificate always describes it. A certificate whose DER cannot be read
 * is stored without metadata (readers then parse it, and refuse it).
 */
export function serializeStoredCertificate(bundle: CertificateBundle, meta: Pick<CertificateMeta, 'issuerId'>, storedAt: number): string {
  let own: CertificateMeta | undefined;
  try {
    own = parseCertificateBundle(bundle, meta.issuerId, { checkKey: false });
  } catch {
    own = undefined;
  }
  const stored: StoredCertificate = {
    version: FORMAT_VERSION,
    issuerId: meta.issuerId,
    certificatePem: bundle.certificatePem,
    privateKeyPem: bundle.privateKeyPem,
    storedAt,
    ...(own ? { meta: storedMetaOf(own) } : {}),
  };
  return JSON.stringify(stored);
}

/**
 * Parse a stored certificate. Metadata is recomputed from the certificate itself:
 * stored metadata is ignored here (only the start-up scan's sleeping decision
 * reads it, through `readStoredCertificate`). Throws `CorruptStorageError` for anything malformed.
 *
 * @param key the storage key, for error messages
 * @param raw the stored JSON
 * @param options `checkKey` (default `true`): the key is parsed and checked
 *   against the certificate. With `false` (start-up loads, 10–20× cheaper) the
 *   metadata is read from the leaf's DER alone and the key is NOT checked, only
 *   required to be a string: a mismatched or unparsable key surfaces when the
 *   TLS context is built (`buildSecureContext` throws `InvalidCertificateError`).
 *   See {@link ParseCertificateOptions.checkKey}.
 */
export function parseStoredCertificate(
  key: string,
  raw: string,
  options?: ParseCertificateOptions,
): { bundle: CertificateBundle; meta: CertificateMeta } {
  const unit = storedUnit(key, raw);
  const bundle = { certificatePem: unit.certificatePem, privateKeyPem: unit.privateKeyPem };
  return { bundle, meta: parseUnit(key, bundle, unit.issuerId, options) };
}

/**
 * The start-up scan's read of a stored certificate: its stored metadata when
 * present and exactly well-formed (`trusted: true`; the certificate is not
 * parsed, its metadata marked unverified: see stored-meta.ts), else the
 * certificate parsed as `parseStoredCertificate` with `checkKey: false` does
 * (with its `bundle`). `onBadMeta` is told when metadata is present but unusable (then parsed);
 * metadata of another `META_VERSION` is not used either, silently.
 * Throws `CorruptStorageError` for anything malformed.
 *
 * Trusted, it makes no object that holds the certificate's or the key's PEM
 * (the caller keeps no key material from unchecked metadata): made for every
 * sleeping name and dropped at once, such an object was made in V8's old
 * space once its allocation site was pretenured (the names read first keep
 * theirs), and held its ~4 KB of PEM strings there until a full collection.
 */
export function readStoredCertificate(
  key: string,
  raw: string,
  onBadMeta: (error: CorruptStorageError) => void,
  name?: string,
): { meta: CertificateMeta; trusted: true } | { bundle: CertificateBundle; meta: CertificateMeta; trusted: false } {
  const unit = storedUnit(key, raw);
  if (unit.meta !== undefined && !isOtherMetaVersion(unit.meta)) {
    const meta = readStoredMeta(unit.meta, unit.issuerId, name);
    if (meta) return { meta, trusted: true };
    onBadMeta(new CorruptStorageError(key, 'the stored certificate metadata is malformed'));
  }
  const bundle = { certificatePem: unit.certificatePem, privateKeyPem: unit.privateKeyPem };
  return { bundle, meta: parseUnit(key, bundle, unit.issuerId, { checkKey: false }), trusted: false };
}

/**
 * Whether a stored unit holds the certificate `meta` describes, by the
 * metadata stored beside it (trusted as `readStoredCertificate` trusts it),
 * making nothing that outlives the call; false when the unit is malformed or
 * has no usable metadata (the caller then reads it in full, which reports it).
 */
export function storedUnitAgrees(raw: string, meta: CertificateMeta): boolean {
  let unit: ReturnType<typeof storedUnit>;
  try {
    unit = storedUnit('', raw);
  } catch {
    return false;
  }
  return unit.meta !== undefined && !isOtherMetaVersion(unit.meta) && storedMetaAgrees(unit.meta, unit.issuerId, meta);
}

/** A stored unit's fields, type-checked (its certificate not parsed). */
function storedUnit(key: string, raw: string): { certificatePem: string; privateKeyPem: string; issuerId: string; meta: unknown } {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new CorruptStorageError(key, 'not JSON (truncated?)', error);
  }
  if (!isRecord(value) || value.version !== FORMAT_VERSION) throw new CorruptStorageError(key, 'unknown format or version');
  const { issuerId, certificatePem, privateKeyPem, meta } = value;
  if (typeof certificatePem !== 'string' || typeof privateKeyPem !== 'string' || typeof issuerId !== 'string') {
    throw new CorruptStorageError(key, 'missing certificate, key or issuer');
  }
  return { certificatePem, privateKeyPem, issuerId, meta };
}

function parseUnit(key: string, bundle: CertificateBundle, issuerId: string, options?: ParseCertificateOptions): CertificateMeta {
  try {
    return parseCertificateBundle(bundle, issuerId, options);
  } catch (error) {
    throw new CorruptStorageError(key, error instanceof Error ? error.message : 'unparsable certificate', error);
  }
}

/**
 * Serialise a failure record. `clockOffsetMs` is the writer's storage-clock
 * offset (storage time minus local time, see storage-clock.ts): readers shift
 * the record's times by the difference with their own, so a shared backoff
 * ends at the same moment for every process, whatever their clocks say.
 */
export function serializeFailureRecord(record: FailureRecord, clockOffsetMs = 0): string {
  return JSON.stringify({ version: FORMAT_VERSION, ...record, ...(clockOffsetMs ? { clockOffsetMs } : {}) });
}

/** Every time in a failure record, moved by `deltaMs` (from the writer's clock to the reader's). */
function shiftFailure(record: FailureRecord, deltaMs: number): FailureRecord {
  if (deltaMs === 0) return record;
  const shifted: FailureRecord = { attempts: record.attempts };
  if (record.nextAttemptAt !== undefined) shifted.nextAttemptAt = record.nextAttemptAt + deltaMs;
  if (record.failingSince !== undefined) shifted.failingSince = record.failingSince + deltaMs;
  if (record.orders !== undefined) shifted.orders = record.orders.map((at) => at + deltaMs);
  if (record.lastError) {
    const { at, retryAfter, issuerRetryAfter, ...rest } = record.lastError;
    shifted.lastError = { ...rest, at: at + deltaMs };
    if (retryAfter !== undefined) shifted.lastError.retryAfter = retryAfter + deltaMs;
    if (issuerRetryAfter) {
      shifted.lastError.issuerRetryAfter = Object.fromEntries(Object.entries(issuerRetryAfter).map(([id, until]) => [id, until + deltaMs]));
    }
  }
  return shifted;
}

/**
 * Parse a failure record, its times on the reader's clock (`clockOffsetMs`,
 * the reader's storage-clock offset; see `serializeFailureRecord`). Throws
 * `CorruptStorageError` when malformed.
 */
export function parseFailureRecord(key: string, raw: string, clockOffsetMs = 0): FailureRecord {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new CorruptStorageError(key, 'not JSON (truncated?)', error);
  }
  if (!isRecord(value) || !isCount(value.attempts)) throw new CorruptStorageError(key, 'malformed failure record');
  const record: FailureRecord = { attempts: value.attempts };
  if (isTime(value.nextAttemptAt)) record.nextAttemptAt = value.nextAttemptAt;
  if (isTime(value.failingSince)) record.failingSince = value.failingSince;
  // The issuance floor's orders: times only, the newest MAX_KEPT_ORDERS (a hostile record cannot grow memory).
  if (Array.isArray(value.orders)) {
    const orders = value.orders.slice(-MAX_KEPT_ORDERS).filter(isTime);
    if (orders.length > 0) record.orders = orders;
  }
  if (isErrorInfo(value.lastError)) {
    const { issuerRetryAfter, ...lastError } = value.lastError;
    record.lastError = isRetryAfterRecord(issuerRetryAfter) ? { ...lastError, issuerRetryAfter } : lastError;
  }
  // Bounded: a hostile offset cannot push a backoff beyond what a sane clock skew explains.
  const writerOffset = typeof value.clockOffsetMs === 'number' && Math.abs(value.clockOffsetMs) < 366 * 86_400_000 ? value.clockOffsetMs : 0;
  // Below a second the difference is measurement noise (a round trip), not skew: times stay exact.
  const delta = writerOffset - clockOffsetMs;
  return shiftFailure(record, Math.abs(delta) < SKEW_NOISE_MS ? 0 : delta);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 1e6;
}
function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}
function isErrorInfo(v: unknown): v is ErrorInfo {
  if (!isRecord(v)) return false;
  return typeof v.type === 'string' && typeof v.message === 'string' && isTime(v.at) && v.type.length < 200 && v.message.length < 10_000;
}

/** A stored failure record; undefined when it cannot be read (it is being replaced: the caller writes a fresh one). */
export function readableFailureRecord(key: string, raw: string): FailureRecord | undefined {
  try {
    return parseFailureRecord(key, raw);
  } catch {
    return undefined;
  }
}

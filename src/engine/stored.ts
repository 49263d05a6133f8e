/**
 * What is stored per name, in its on-storage format with strict parsing: the
 * certificate (chain, key and issuer id: one JSON value, written with one
 * atomic `store`, so a crash can never leave a certificate beside the wrong
 * key) and the failure record (the backoff, so a restart keeps it).
 */
import { parseCertificateBundle, type ParseCertificateOptions } from '../certs.js';
import { CorruptStorageError, isRetryAfterRecord } from '../errors.js';
import type { FailureRecord } from '../machines/certificate.js';
import type { CertificateBundle, CertificateMeta, ErrorInfo } from '../types.js';

const FORMAT_VERSION = 1;

interface StoredCertificate {
  version: number;
  issuerId: string;
  certificatePem: string;
  privateKeyPem: string;
  storedAt: number;
}

/** Serialise a certificate, its key and its issuer id for storage. */
export function serializeStoredCertificate(bundle: CertificateBundle, meta: CertificateMeta, storedAt: number): string {
  const stored: StoredCertificate = {
    version: FORMAT_VERSION,
    issuerId: meta.issuerId,
    certificatePem: bundle.certificatePem,
    privateKeyPem: bundle.privateKeyPem,
    storedAt,
  };
  return JSON.stringify(stored);
}

/**
 * Parse a stored certificate. Metadata is recomputed from the certificate itself
 * (never trusted from storage). Throws `CorruptStorageError` for anything malformed.
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
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new CorruptStorageError(key, 'not JSON (truncated?)', error);
  }
  if (!isRecord(value) || value.version !== FORMAT_VERSION) throw new CorruptStorageError(key, 'unknown format or version');
  const { issuerId, certificatePem, privateKeyPem } = value;
  if (typeof certificatePem !== 'string' || typeof privateKeyPem !== 'string' || typeof issuerId !== 'string') {
    throw new CorruptStorageError(key, 'missing certificate, key or issuer');
  }
  const bundle = { certificatePem, privateKeyPem };
  try {
    return { bundle, meta: parseCertificateBundle(bundle, issuerId, options) };
  } catch (error) {
    throw new CorruptStorageError(key, error instanceof Error ? error.message : 'unparsable certificate', error);
  }
}

/** Serialise a failure record. */
export function serializeFailureRecord(record: FailureRecord): string {
  return JSON.stringify({ version: FORMAT_VERSION, ...record });
}

/** Parse a failure record; throws `CorruptStorageError` when malformed. */
export function parseFailureRecord(key: string, raw: string): FailureRecord {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new CorruptStorageError(key, 'not JSON (truncated?)', error);
  }
  if (!isRecord(value) || !isCount(value.attempts)) throw new CorruptStorageError(key, 'malformed failure record');
  const record: FailureRecord = { attempts: value.attempts };
  if (isTime(value.nextAttemptAt)) record.nextAttemptAt = value.nextAttemptAt;
  if (isErrorInfo(value.lastError)) {
    const { issuerRetryAfter, ...lastError } = value.lastError;
    record.lastError = isRetryAfterRecord(issuerRetryAfter) ? { ...lastError, issuerRetryAfter } : lastError;
  }
  return record;
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

/**
 * Certificate inspection on node:crypto alone.
 *
 * node-forge cannot parse ECDSA certificates (which ACME CAs issue), so the
 * leaf is parsed with `X509Certificate`. What that class does not expose (the
 * Authority Key Identifier, the serial's exact DER bytes, SAN entries without
 * the quoting of its text form) is read by a small bounds-checked DER walker
 * below. `forge.asn1.fromDer` would decode as fast (both take a few µs against
 * ~0.5 ms of OpenSSL parsing), but it accepts BER (indefinite lengths), throws
 * untyped errors, hands back binary strings, and still needs the same
 * positional navigation; the walker keeps this module free of forge, strict
 * DER, and its only error `InvalidCertificateError`.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { InvalidCertificateError } from './errors.js';
import type { CertificateBundle, CertificateMeta } from './types.js';

// ─── PEM ───────────────────────────────────────────────────────────────────

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;

/**
 * Split a PEM chain into its certificates, in order, each normalised to LF
 * line endings and one trailing newline. Other PEM blocks (keys) and text
 * between blocks are ignored. An unterminated block is not returned.
 */
export function splitPemChain(pem: string): string[] {
  const blocks = pem.match(PEM_CERTIFICATE);
  if (blocks === null) return [];
  return blocks.map((block) => `${block.replace(/\r\n?/g, '\n')}\n`);
}

// ─── Parsing a bundle ──────────────────────────────────────────────────────

/**
 * Inspect a certificate bundle: parse its leaf, check that the private key
 * belongs to it, and return the key-free metadata the engine keeps (`names`:
 * SAN DNS names, lower-cased, then SAN IP addresses in canonical form). Only
 * the leaf is parsed; the rest of the chain is passed through as is.
 *
 * Cost: ~0.5–1 ms, nearly all of it OpenSSL 3 decoding the certificate and
 * the key (traditional `RSA`/`EC PRIVATE KEY` PEM is about 3× cheaper than PKCS#8).
 *
 * @param bundle the leaf + chain PEM and the leaf's private key PEM
 * @param issuerId `id` of the certstate issuer that obtained it (`unknown` when imported)
 * @throws InvalidCertificateError when there is no certificate, the leaf or the key
 *   cannot be parsed, or the key does not match the leaf. Messages never include key material.
 */
export function parseCertificateBundle(bundle: CertificateBundle, issuerId: string): CertificateMeta {
  if (typeof bundle?.certificatePem !== 'string' || typeof bundle.privateKeyPem !== 'string') {
    throw new InvalidCertificateError('certificate bundle must hold certificatePem and privateKeyPem strings');
  }
  const [leafPem] = splitPemChain(bundle.certificatePem);
  if (leafPem === undefined) throw new InvalidCertificateError('no PEM certificate found');
  const leaf = parseX509(leafPem);
  const key = parsePrivateKey(bundle.privateKeyPem);
  if (!keyMatches(leaf, key)) throw new InvalidCertificateError('private key does not match the certificate');

  const fields = readCertificateFields(leaf.raw);
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) {
    throw new InvalidCertificateError('certificate validity dates cannot be read');
  }
  const meta: CertificateMeta = {
    fingerprint: leaf.fingerprint256,
    serial: leaf.serialNumber.toUpperCase(),
    names: [...fields.dnsNames, ...fields.ipAddresses],
    notBefore,
    notAfter,
    // X509Certificate prints one RDN per line; a single line reads better in logs and status.
    issuer: leaf.issuer.split('\n').join(', '),
    issuerId,
  };
  const id = ariCertIdOf(fields);
  if (id !== undefined) meta.ariCertId = id;
  return meta;
}

function parseX509(pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new InvalidCertificateError('certificate cannot be parsed', error);
  }
}

const TRADITIONAL_KEY = /^\s*-----BEGIN (RSA|EC) PRIVATE KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END \1 PRIVATE KEY-----\s*$/;

function parsePrivateKey(pem: string): KeyObject {
  try {
    // OpenSSL 3 tries every decoder on PEM (~0.5 ms a key); a traditional key
    // handed over as typed DER skips that search and parses about 3× faster.
    const traditional = TRADITIONAL_KEY.exec(pem);
    if (traditional !== null) {
      const type = traditional[1] === 'RSA' ? 'pkcs1' : 'sec1';
      return createPrivateKey({ key: Buffer.from(traditional[2], 'base64'), format: 'der', type });
    }
    return createPrivateKey(pem);
  } catch (error) {
    // No cause: an error object about the key is kept out of logs entirely; the code is enough.
    const code = (error as { code?: unknown }).code;
    throw new InvalidCertificateError(`private key cannot be parsed${typeof code === 'string' ? ` (${code})` : ''}`);
  }
}

function keyMatches(leaf: X509Certificate, key: KeyObject): boolean {
  try {
    return leaf.checkPrivateKey(key);
  } catch {
    return false; // e.g. a key type OpenSSL cannot compare with the leaf's
  }
}

// ─── Name coverage ─────────────────────────────────────────────────────────

/**
 * Whether a certificate covers `name` (case-insensitive, one trailing dot
 * ignored). Wildcards follow RFC 6125 §6.4.3: `*.example.com` covers exactly one
 * extra leftmost label (`a.example.com`), not `example.com` nor `a.b.example.com`;
 * a requested wildcard is covered only by the same wildcard. IP literals match
 * IP entries only, compared in canonical form (`0:0::1` is `::1`).
 */
export function certificateCoversName(meta: Pick<CertificateMeta, 'names'>, name: string): boolean {
  const wanted = normaliseName(name);
  if (wanted === '') return false;
  if (isIP(wanted) !== 0) {
    const ip = canonicalIp(wanted);
    return meta.names.some((entry) => isIP(entry) !== 0 && canonicalIp(entry) === ip);
  }
  const firstDot = wanted.indexOf('.');
  for (const entry of meta.names) {
    const san = normaliseName(entry);
    if (san === wanted) return true;
    if (san.startsWith('*.') && san.length > 2 && !san.includes('*', 1) && firstDot > 0) {
      const firstLabel = wanted.slice(0, firstDot);
      if (!firstLabel.includes('*') && wanted.slice(firstDot) === san.slice(1)) return true;
    }
  }
  return false;
}

function normaliseName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Canonical text of an IP literal: IPv4 as given, IPv6 in RFC 5952 form
 * (lower case, longest zero run compressed). Non-IP input is returned as is.
 */
export function canonicalIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  try {
    // The WHATWG URL serializer implements RFC 5952 compression.
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip.toLowerCase(); // zone ids (fe80::1%eth0) are not valid in URLs
  }
}

/**
 * Network-order bytes of an IP literal (4 or 16), as a SAN `iPAddress` holds
 * them; `undefined` when `ip` is not an IP literal (zone ids included).
 */
export function ipAddressBytes(ip: string): Buffer | undefined {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family !== 6 || ip.includes('%')) return undefined;
  // After canonicalisation: hex groups only (no dotted tail), at most one "::".
  const [head = '', tail] = canonicalIp(ip).split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros: string[] = Array(8 - headGroups.length - tailGroups.length).fill('0');
  const bytes = Buffer.alloc(16);
  [...headGroups, ...zeros, ...tailGroups].forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

function formatIp(bytes: Uint8Array): string | undefined {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) return undefined; // 8 or 32 bytes are name-constraint ranges, not addresses
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return canonicalIp(groups.join(':'));
}

// ─── ARI certificate id ────────────────────────────────────────────────────

/**
 * The ARI certificate identifier of RFC 9773 §4.1:
 * `base64url(AKI keyIdentifier) "." base64url(serial INTEGER content bytes)`,
 * the serial including its leading 0x00 when the high bit is set.
 *
 * @param certificate a parsed certificate or its DER bytes
 * @returns the identifier, or `undefined` when the certificate has no AKI keyIdentifier
 * @throws InvalidCertificateError when the DER is malformed
 */
export function ariCertId(certificate: X509Certificate | Uint8Array): string | undefined {
  const der = certificate instanceof X509Certificate ? certificate.raw : certificate;
  return ariCertIdOf(readCertificateFields(der));
}

function ariCertIdOf(fields: CertificateFields): string | undefined {
  if (fields.authorityKeyId === undefined) return undefined;
  return `${base64url(fields.authorityKeyId)}.${base64url(fields.serial)}`;
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

// ─── TLS ───────────────────────────────────────────────────────────────────

/**
 * Build the `SecureContext` a TLS server presents for a certificate. Costly
 * (it parses the chain and key in OpenSSL): build one per certificate and cache it.
 *
 * @throws InvalidCertificateError when OpenSSL refuses the pair
 */
export function buildSecureContext(bundle: CertificateBundle): tls.SecureContext {
  try {
    return tls.createSecureContext({ cert: bundle.certificatePem, key: bundle.privateKeyPem });
  } catch (error) {
    // OpenSSL's messages ("key values mismatch", decoder errors) never echo the input.
    const reason = error instanceof Error ? error.message : String(error);
    throw new InvalidCertificateError(`cannot build a TLS context: ${reason}`);
  }
}

// ─── A minimal DER walker ──────────────────────────────────────────────────

/** The fields read from the DER that `X509Certificate` does not expose as bytes. */
interface CertificateFields {
  /** Content bytes of the serial INTEGER (with its sign byte, if any). */
  serial: Uint8Array;
  /** AKI keyIdentifier bytes. */
  authorityKeyId?: Uint8Array;
  dnsNames: string[];
  ipAddresses: string[];
}

/** One DER element: `tag`, and its content at `der[start, end)`. */
interface Element {
  tag: number;
  start: number;
  end: number;
}

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const OID = 0x06;
const OCTET_STRING = 0x04;
const BOOLEAN = 0x01;
const VERSION_TAG = 0xa0; // [0] EXPLICIT Version
const EXTENSIONS_TAG = 0xa3; // [3] EXPLICIT Extensions
const AKI_KEY_ID_TAG = 0x80; // [0] IMPLICIT KeyIdentifier
const SAN_DNS_TAG = 0x82; // [2] IMPLICIT IA5String
const SAN_IP_TAG = 0x87; // [7] IMPLICIT OCTET STRING
const OID_AUTHORITY_KEY_IDENTIFIER = [0x55, 0x1d, 0x23]; // 2.5.29.35
const OID_SUBJECT_ALT_NAME = [0x55, 0x1d, 0x11]; // 2.5.29.17

function malformed(reason: string): never {
  throw new InvalidCertificateError(`malformed certificate DER: ${reason}`);
}

/** Read the element at `pos`, which must end by `limit`. */
function readElement(der: Uint8Array, pos: number, limit: number): Element {
  if (pos + 2 > limit) malformed('truncated header');
  const tag = der[pos];
  if ((tag & 0x1f) === 0x1f) malformed('high tag number');
  let length = der[pos + 1];
  let start = pos + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    // 0 is BER's indefinite length; more than 4 octets cannot describe a real certificate.
    if (octets === 0 || octets > 4) malformed('unsupported length encoding');
    if (start + octets > limit) malformed('truncated length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i];
    start += octets;
  }
  const end = start + length;
  if (end > limit) malformed('element overruns its container');
  return { tag, start, end };
}

function expectTag(element: Element, tag: number, what: string): Element {
  if (element.tag !== tag) malformed(`expected ${what}`);
  return element;
}

/** The elements inside a constructed element, in order. */
function children(der: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const child = readElement(der, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

function bytesEqual(der: Uint8Array, element: Element, expected: readonly number[]): boolean {
  if (element.end - element.start !== expected.length) return false;
  return expected.every((byte, i) => der[element.start + i] === byte);
}

/**
 * Read serial, AKI and SAN from a certificate's DER. Every read is bounds
 * checked; the only error this throws is `InvalidCertificateError`.
 */
function readCertificateFields(der: Uint8Array): CertificateFields {
  const certificate = expectTag(readElement(der, 0, der.length), SEQUENCE, 'Certificate SEQUENCE');
  const tbs = expectTag(readElement(der, certificate.start, certificate.end), SEQUENCE, 'TBSCertificate SEQUENCE');
  const items = children(der, tbs);
  let index = items[0]?.tag === VERSION_TAG ? 1 : 0;
  const serial = items[index];
  if (serial === undefined || serial.tag !== INTEGER || serial.end === serial.start) malformed('expected serial INTEGER');
  index += 6; // serial, signature, issuer, validity, subject, subjectPublicKeyInfo

  const fields: CertificateFields = { serial: der.subarray(serial.start, serial.end), dnsNames: [], ipAddresses: [] };
  const extensions = items.slice(index).find((item) => item.tag === EXTENSIONS_TAG);
  if (extensions === undefined) return fields;

  const list = expectTag(readElement(der, extensions.start, extensions.end), SEQUENCE, 'Extensions SEQUENCE');
  for (const extension of children(der, list)) {
    const parts = children(der, expectTag(extension, SEQUENCE, 'Extension SEQUENCE'));
    const oid = expectTag(parts[0] ?? malformed('empty Extension'), OID, 'extension OID');
    const valueIndex = parts[1]?.tag === BOOLEAN ? 2 : 1;
    const value = expectTag(parts[valueIndex] ?? malformed('extension without value'), OCTET_STRING, 'extnValue');
    if (bytesEqual(der, oid, OID_AUTHORITY_KEY_IDENTIFIER) && fields.authorityKeyId === undefined) {
      const aki = expectTag(readElement(der, value.start, value.end), SEQUENCE, 'AuthorityKeyIdentifier SEQUENCE');
      const keyId = children(der, aki).find((part) => part.tag === AKI_KEY_ID_TAG);
      if (keyId !== undefined && keyId.end > keyId.start) fields.authorityKeyId = der.subarray(keyId.start, keyId.end);
    } else if (bytesEqual(der, oid, OID_SUBJECT_ALT_NAME)) {
      const names = expectTag(readElement(der, value.start, value.end), SEQUENCE, 'GeneralNames SEQUENCE');
      for (const name of children(der, names)) {
        const content = der.subarray(name.start, name.end);
        if (name.tag === SAN_DNS_TAG) {
          fields.dnsNames.push(Buffer.from(content).toString('latin1').toLowerCase());
        } else if (name.tag === SAN_IP_TAG) {
          const ip = formatIp(content);
          if (ip !== undefined) fields.ipAddresses.push(ip);
        }
      }
    }
  }
  return fields;
}

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
 *
 * `parseCertificateBundle(…, { checkKey: false })` skips OpenSSL altogether:
 * the walker then also reads the validity and the issuer name, and the
 * fingerprint is the SHA-256 of the DER (10–20× cheaper, for start-up loads).
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
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

/** Options of {@link parseCertificateBundle}. */
export interface ParseCertificateOptions {
  /**
   * `true` (default): parse the leaf and the private key with OpenSSL and check
   * that the key belongs to the leaf (~0.4–0.8 ms a bundle).
   *
   * `false`: read the metadata from the leaf's DER alone, 10–20× cheaper, for
   * loading many stored certificates at start-up. The result is the same as
   * with `true` for any certificate in DER as RFC 5280 profiles it. The
   * private key is NOT parsed and NOT checked against the certificate: only
   * its type (a string) is. OpenSSL checks the pair when the TLS context is
   * built: {@link buildSecureContext} throws `InvalidCertificateError`
   * ("key values mismatch", or a key of another type than the certificate's)
   * for a key that does not match, and for a certificate OpenSSL cannot load:
   * the certificate's layout is checked here, but only serial, issuer,
   * validity, SAN and AKI are decoded (not the subject, the public key, the
   * other extensions or the signature).
   *
   * Stricter than `true` where `true` accepts BER or out-of-profile
   * encodings: tags and lengths must be DER's (constructed bit set, shortest
   * length form), nothing may follow the certificate, times must be
   * `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), the
   * signature algorithm parameters absent, NULL or a SEQUENCE, the signature
   * without unused bits. (OpenSSL re-encodes the outer layers of such input,
   * so its fingerprint would not be the SHA-256 of the DER.) The issuer name is formatted as
   * `X509Certificate` prints it, with two exceptions no CA's name runs into:
   * an attribute type outside the table of names (X.520, PKCS #9, COSINE, EV
   * jurisdiction, Russian INN/OGRN) is printed as its dotted OID even where
   * OpenSSL has a name for it, and a SEQUENCE value as `#` + hex of its DER.
   */
  checkKey?: boolean;
}

/**
 * Inspect a certificate bundle: parse its leaf, check that the private key
 * belongs to it, and return the key-free metadata the engine keeps (`names`:
 * SAN DNS names, lower-cased, then SAN IP addresses in canonical form). Only
 * the leaf is parsed; the rest of the chain is passed through as is.
 *
 * Cost: ~0.5–1 ms, nearly all of it OpenSSL 3 decoding the certificate and
 * the key (traditional `RSA`/`EC PRIVATE KEY` PEM is about 3× cheaper than PKCS#8).
 * With `{ checkKey: false }`: tens of µs, and the key is not checked (see
 * {@link ParseCertificateOptions.checkKey}).
 *
 * @param bundle the leaf + chain PEM and the leaf's private key PEM
 * @param issuerId `id` of the certstate issuer that obtained it (`unknown` when imported)
 * @param options `checkKey` (default `true`)
 * @throws InvalidCertificateError when there is no certificate, the leaf or the key
 *   cannot be parsed, or the key does not match the leaf (with `checkKey: false`:
 *   when the leaf's DER is malformed; the key is not looked at). Messages never include key material.
 */
export function parseCertificateBundle(
  bundle: CertificateBundle,
  issuerId: string,
  options?: ParseCertificateOptions,
): CertificateMeta {
  if (typeof bundle?.certificatePem !== 'string' || typeof bundle.privateKeyPem !== 'string') {
    throw new InvalidCertificateError('certificate bundle must hold certificatePem and privateKeyPem strings');
  }
  const [leafPem] = splitPemChain(bundle.certificatePem);
  if (leafPem === undefined) throw new InvalidCertificateError('no PEM certificate found');
  if (options?.checkKey === false) return leafMetaFromDer(leafPem, issuerId);

  const leaf = parseX509(leafPem);
  const key = parsePrivateKey(bundle.privateKeyPem);
  if (!keyMatches(leaf, key)) throw new InvalidCertificateError('private key does not match the certificate');

  const fields = readCertificateFields(leaf.raw);
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) {
    throw new InvalidCertificateError('certificate validity dates cannot be read');
  }
  // undefined (despite its type) when the name is empty: OpenSSL prints nothing.
  const issuer = leaf.issuer as string | undefined;
  if (!issuer) throw new InvalidCertificateError(EMPTY_ISSUER);
  const meta: CertificateMeta = {
    fingerprint: leaf.fingerprint256,
    serial: leaf.serialNumber.toUpperCase(),
    names: [...fields.dnsNames, ...fields.ipAddresses],
    notBefore,
    notAfter,
    // X509Certificate prints one RDN per line; a single line reads better in logs and status.
    issuer: issuer.split('\n').join(', '),
    issuerId,
  };
  const id = ariCertIdOf(fields);
  if (id !== undefined) meta.ariCertId = id;
  return meta;
}

const EMPTY_ISSUER = 'certificate issuer name is empty';

/** `parseCertificateBundle` with `checkKey: false`: the same metadata, from the leaf's DER alone. */
function leafMetaFromDer(leafPem: string, issuerId: string): CertificateMeta {
  const der = pemBody(leafPem);
  const leaf = readLeaf(der);
  const meta: CertificateMeta = {
    fingerprint: fingerprint256(der),
    serial: serialText(leaf.fields.serial),
    names: [...leaf.fields.dnsNames, ...leaf.fields.ipAddresses],
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    // 100,000 certificates from a handful of CAs: one copy of each issuer text, not one per certificate.
    issuer: intern(leaf.issuer),
    issuerId: intern(issuerId),
  };
  const id = ariCertIdOf(leaf.fields);
  if (id !== undefined) meta.ariCertId = id;
  return meta;
}

/** Issuer texts and ids seen, bounded (a hostile store could hold many distinct ones). */
const interned = new Map<string, string>();
function intern(text: string): string {
  const known = interned.get(text);
  if (known !== undefined) return known;
  if (interned.size < 1024) interned.set(text, text);
  return text;
}

/** The DER inside one PEM block as `splitPemChain` returns it; only base64 and whitespace are allowed. */
function pemBody(pem: string): Buffer {
  const body = pem.slice(pem.indexOf('\n') + 1, pem.lastIndexOf('-----END')).replace(/[\t\n\v\f\r ]+/g, '');
  const der = Buffer.from(body, 'base64');
  // Node's decoder skips characters outside the alphabet (and '=' before the end), so any such
  // character shows as missing bytes; it would take base64url's '_', hence the extra test.
  const padding = body.endsWith('==') ? 2 : body.endsWith('=') ? 1 : 0;
  if (body.length % 4 !== 0 || der.length !== (body.length / 4) * 3 - padding || body.includes('_')) {
    throw new InvalidCertificateError('certificate PEM is not base64');
  }
  return der;
}

/** SHA-256 of the DER as `X509Certificate#fingerprint256` prints it (upper-case hex, colons). */
function fingerprint256(der: Uint8Array): string {
  const hex = createHash('sha256').update(der).digest('hex').toUpperCase();
  // join() yields one flat string; `+=` would keep a tree of 63 pieces (~2 KB) alive per certificate.
  return hex.match(/../g)!.join(':');
}

/**
 * A serial INTEGER's content bytes as `X509Certificate#serialNumber` prints
 * them (OpenSSL's `BN_bn2hex`): the magnitude in whole upper-case hex bytes, no
 * leading zero bytes (so no 0x00 sign byte), `0` for zero, `-` before a negative serial.
 */
function serialText(bytes: Uint8Array): string {
  const negative = (bytes[0] & 0x80) !== 0;
  let magnitude = Buffer.from(bytes);
  if (negative) {
    // Two's complement: invert, add one.
    let carry = 1;
    for (let i = magnitude.length - 1; i >= 0; i--) {
      const sum = (~magnitude[i] & 0xff) + carry;
      magnitude[i] = sum & 0xff;
      carry = sum >> 8;
    }
  }
  let first = 0;
  while (first < magnitude.length && magnitude[first] === 0) first++;
  if (first === magnitude.length) return '0';
  magnitude = magnitude.subarray(first);
  const hex = magnitude.toString('hex').toUpperCase();
  return negative ? `-${hex}` : hex;
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
  // join(): one flat string, not a concatenation tree kept alive per certificate.
  return [base64url(fields.authorityKeyId), base64url(fields.serial)].join('.');
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

// ─── TLS ───────────────────────────────────────────────────────────────────

/**
 * Build the `SecureContext` a TLS server presents for a certificate. Costly
 * (it parses the chain and key in OpenSSL): build one per certificate and cache it.
 *
 * This is where a bundle parsed with `checkKey: false` has its key checked:
 * OpenSSL refuses a key of the certificate's type that does not match it
 * ("key values mismatch"). A key of another type (an EC key beside an RSA
 * certificate) OpenSSL loads without complaint into a slot of its own, and
 * every handshake then fails ("no suitable signature algorithm"); so the
 * key's type, read from its PEM label or PKCS#8 algorithm (no key parse), is
 * compared with the certificate's public key type here.
 *
 * @throws InvalidCertificateError when OpenSSL refuses the pair, or the key is not of the certificate's type
 */
export function buildSecureContext(bundle: CertificateBundle): tls.SecureContext {
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ cert: bundle.certificatePem, key: bundle.privateKeyPem });
  } catch (error) {
    // OpenSSL's messages ("key values mismatch", decoder errors) never echo the input.
    const reason = error instanceof Error ? error.message : String(error);
    throw new InvalidCertificateError(`cannot build a TLS context: ${reason}`);
  }
  const certificateKeyType = leafKeyType(bundle.certificatePem);
  const keyType = privateKeyType(bundle.privateKeyPem);
  if (certificateKeyType !== undefined && keyType !== undefined && keyType !== certificateKeyType) {
    throw new InvalidCertificateError(
      `cannot build a TLS context: the private key (${keyType}) does not match the certificate (${certificateKeyType})`,
    );
  }
  return context;
}

/** Key types by SubjectPublicKeyInfo / PrivateKeyInfo algorithm OID (content bytes, hex). RSASSA-PSS is left out: unknown, not compared. */
const KEY_TYPES = new Map([
  ['2a864886f70d010101', 'RSA'],
  ['2a8648ce3d0201', 'EC'],
  ['2b6570', 'Ed25519'],
  ['2b6571', 'Ed448'],
  ['2a8648ce380401', 'DSA'],
]);

/** The leaf's public key type, `undefined` when unknown or unreadable (OpenSSL has judged the certificate by then). */
function leafKeyType(certificatePem: string): string | undefined {
  try {
    const [leafPem] = splitPemChain(certificatePem);
    if (leafPem === undefined) return undefined;
    const der = pemBody(leafPem);
    const certificate = readElement(der, 0, der.length);
    const items = children(der, readElement(der, certificate.start, certificate.end));
    const publicKey = items[(items[0]?.tag === VERSION_TAG ? 1 : 0) + 5];
    return publicKey === undefined ? undefined : algorithmType(der, publicKey);
  } catch {
    return undefined;
  }
}

const PRIVATE_KEY_PEM = /-----BEGIN ((?:RSA |EC |DSA )?PRIVATE KEY)-----([^-]*)-----END \1-----/;

/** The private key's type from its PEM label, or for PKCS#8 from its algorithm OID; `undefined` when unknown. */
function privateKeyType(privateKeyPem: string): string | undefined {
  const match = PRIVATE_KEY_PEM.exec(privateKeyPem);
  if (match === null) return undefined;
  const label = match[1].split(' ')[0];
  if (label !== 'PRIVATE') return label;
  let der: Buffer | undefined;
  try {
    der = Buffer.from(match[2], 'base64');
    // PrivateKeyInfo ::= SEQUENCE { version INTEGER, privateKeyAlgorithm AlgorithmIdentifier, … }
    const info = readElement(der, 0, der.length);
    const algorithm = children(der, info)[1];
    return algorithm === undefined ? undefined : algorithmType(der, algorithm, true);
  } catch {
    return undefined;
  } finally {
    der?.fill(0);
  }
}

/** Type named by a SubjectPublicKeyInfo's (or, `bare`, an AlgorithmIdentifier's) algorithm OID. */
function algorithmType(der: Uint8Array, element: Element, bare = false): string | undefined {
  const algorithm = bare ? element : children(der, expectTag(element, SEQUENCE, 'SubjectPublicKeyInfo'))[0];
  const oid = algorithm === undefined ? undefined : children(der, expectTag(algorithm, SEQUENCE, 'AlgorithmIdentifier'))[0];
  if (oid === undefined || oid.tag !== OID) return undefined;
  return KEY_TYPES.get(Buffer.from(der.subarray(oid.start, oid.end)).toString('hex'));
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
  return readExtensionFields(der, serial, items.slice(index).find((item) => item.tag === EXTENSIONS_TAG));
}

/** Serial, and AKI and SAN from the `[3]` Extensions element when there is one. */
function readExtensionFields(der: Uint8Array, serial: Element, extensions: Element | undefined): CertificateFields {
  const fields: CertificateFields = { serial: der.subarray(serial.start, serial.end), dnsNames: [], ipAddresses: [] };
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

// ─── The leaf from its DER alone (checkKey: false) ─────────────────────────

/** What `checkKey: false` reads from the leaf, besides the fingerprint. */
interface LeafSummary {
  fields: CertificateFields;
  notBefore: number;
  notAfter: number;
  /** Issuer name, formatted as `parseCertificateBundle` formats `X509Certificate#issuer`. */
  issuer: string;
}

const SET = 0x31;
const BIT_STRING = 0x03;
const NULL = 0x05;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const ISSUER_UNIQUE_ID_TAG = 0x81; // [1] IMPLICIT BIT STRING
const SUBJECT_UNIQUE_ID_TAG = 0x82; // [2] IMPLICIT BIT STRING

/**
 * `readElement`, also refusing a length that is not in its shortest form
 * (X.690 §10.1). OpenSSL accepts those but re-encodes the outer layers, so
 * the SHA-256 of such input would not be the certificate's fingerprint.
 */
function readCanonical(der: Uint8Array, pos: number, limit: number): Element {
  const element = readElement(der, pos, limit);
  if (element.start - pos !== headerLength(element)) malformed('length not in its shortest form');
  return element;
}

function canonicalChildren(der: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const child = readCanonical(der, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

/**
 * Walk a whole certificate as RFC 5280 §4.1 lays it out: serial, validity,
 * issuer name, SAN and AKI are read, the rest is checked for shape only (tags,
 * order, lengths). Bounds checked; throws only `InvalidCertificateError`.
 */
function readLeaf(der: Buffer): LeafSummary {
  const certificate = expectTag(readCanonical(der, 0, der.length), SEQUENCE, 'Certificate SEQUENCE');
  if (certificate.end !== der.length) malformed('data after the certificate');
  const [tbs, algorithm, signature, extra] = canonicalChildren(der, certificate);
  expectTag(tbs ?? malformed('empty Certificate'), SEQUENCE, 'TBSCertificate SEQUENCE');
  checkAlgorithmIdentifier(der, algorithm ?? malformed('no signatureAlgorithm'));
  expectTag(signature ?? malformed('no signature'), BIT_STRING, 'signature BIT STRING');
  // OpenSSL clears unused bits when it re-encodes; a signature has none.
  if (signature.end === signature.start || der[signature.start] !== 0) malformed('signature has unused bits');
  if (extra !== undefined) malformed('data after the signature');

  const items = canonicalChildren(der, tbs);
  let index = 0;
  if (items[0]?.tag === VERSION_TAG) {
    const [version, more] = canonicalChildren(der, items[0]);
    if (version?.tag !== INTEGER || more !== undefined) malformed('expected version INTEGER');
    index = 1;
  }
  const [serial, innerAlgorithm, issuer, validity, subject, publicKey] = items.slice(index, index + 6);
  expectTag(serial ?? malformed('expected serial INTEGER'), INTEGER, 'serial INTEGER');
  checkInteger(der, serial);
  expectTag(innerAlgorithm ?? malformed('expected signature AlgorithmIdentifier'), SEQUENCE, 'signature AlgorithmIdentifier');
  expectTag(issuer ?? malformed('expected issuer Name'), SEQUENCE, 'issuer Name');
  expectTag(validity ?? malformed('expected Validity'), SEQUENCE, 'Validity SEQUENCE');
  expectTag(subject ?? malformed('expected subject Name'), SEQUENCE, 'subject Name');
  expectTag(publicKey ?? malformed('expected SubjectPublicKeyInfo'), SEQUENCE, 'SubjectPublicKeyInfo SEQUENCE');

  // issuerUniqueID [1], subjectUniqueID [2], extensions [3]: each optional, in this order.
  let extensions: Element | undefined;
  let previous = 0;
  for (const item of items.slice(index + 6)) {
    const order = [ISSUER_UNIQUE_ID_TAG, SUBJECT_UNIQUE_ID_TAG, EXTENSIONS_TAG].indexOf(item.tag) + 1;
    if (order <= previous) malformed('unexpected element after SubjectPublicKeyInfo');
    previous = order;
    if (item.tag === EXTENSIONS_TAG) extensions = item;
  }

  const [notBefore, notAfter, more] = canonicalChildren(der, validity);
  if (notBefore === undefined || notAfter === undefined || more !== undefined) malformed('Validity must hold two times');
  return {
    fields: readExtensionFields(der, serial, extensions),
    notBefore: readTime(der, notBefore),
    notAfter: readTime(der, notAfter),
    issuer: formatName(der, issuer),
  };
}

/** AlgorithmIdentifier: an OID, then nothing, NULL, or a SEQUENCE (RSASSA-PSS). */
function checkAlgorithmIdentifier(der: Uint8Array, algorithm: Element): void {
  const [oid, parameters, more] = canonicalChildren(der, expectTag(algorithm, SEQUENCE, 'signatureAlgorithm SEQUENCE'));
  checkOid(der, expectTag(oid ?? malformed('empty AlgorithmIdentifier'), OID, 'algorithm OID'));
  const nullParameters = parameters?.tag === NULL && parameters.end === parameters.start;
  if ((parameters !== undefined && !nullParameters && parameters.tag !== SEQUENCE) || more !== undefined) {
    malformed('unsupported AlgorithmIdentifier parameters');
  }
}

/** A DER INTEGER: at least one byte, no redundant leading 0x00 or 0xFF (OpenSSL refuses those too). */
function checkInteger(der: Uint8Array, integer: Element): void {
  const length = integer.end - integer.start;
  if (length === 0) malformed('empty INTEGER');
  const [first, second] = [der[integer.start], der[integer.start + 1]];
  if (length > 1 && ((first === 0x00 && second < 0x80) || (first === 0xff && second >= 0x80))) {
    malformed('INTEGER not in its shortest form');
  }
}

/** An OBJECT IDENTIFIER's content as OpenSSL accepts it: subidentifiers without 0x80 padding, the last one ended. */
function checkOid(der: Uint8Array, oid: Element): void {
  if (oid.end === oid.start || der[oid.end - 1] & 0x80) malformed('invalid OBJECT IDENTIFIER');
  for (let i = oid.start; i < oid.end; i++) {
    if (der[i] === 0x80 && (i === oid.start || !(der[i - 1] & 0x80))) malformed('invalid OBJECT IDENTIFIER');
  }
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * A validity time as RFC 5280 §4.1.2.5 encodes it: UTCTime `YYMMDDHHMMSSZ`
 * (YY < 50 is 20YY) or GeneralizedTime `YYYYMMDDHHMMSSZ`; every field in range
 * (no 24:00, no leap second, no 30 February), as OpenSSL checks them.
 * @returns ms since epoch
 */
function readTime(der: Uint8Array, time: Element): number {
  if (time.tag !== UTC_TIME && time.tag !== GENERALIZED_TIME) malformed('expected UTCTime or GeneralizedTime');
  const yearDigits = time.tag === UTC_TIME ? 2 : 4;
  if (time.end - time.start !== yearDigits + 11 || der[time.end - 1] !== 0x5a /* Z */) malformed('malformed time');
  let pos = time.start;
  const number = (digits: number): number => {
    let value = 0;
    for (const end = pos + digits; pos < end; pos++) {
      const digit = der[pos] - 0x30;
      if (digit < 0 || digit > 9) malformed('malformed time');
      value = value * 10 + digit;
    }
    return value;
  };
  let year = number(yearDigits);
  if (yearDigits === 2) year += year < 50 ? 2000 : 1900;
  const [month, day, hour, minute, second] = [number(2), number(2), number(2), number(2), number(2)];
  const leap = month === 2 && year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (month < 1 || month > 12 || day < 1 || day > DAYS_IN_MONTH[month - 1] + (leap ? 1 : 0)) malformed('time out of range');
  if (hour > 23 || minute > 59 || second > 59) malformed('time out of range');
  const date = new Date(Date.UTC(2000, month - 1, day, hour, minute, second));
  date.setUTCFullYear(year); // Date.UTC would read years 0–99 as 1900–1999
  return date.getTime();
}

// ─── Issuer names as X509Certificate prints them ───────────────────────────

/**
 * An X.501 Name as `X509Certificate#issuer` prints it (OpenSSL's
 * `X509_NAME_print_ex` with `ASN1_STRFLGS_ESC_2253 | ASN1_STRFLGS_ESC_CTRL |
 * ASN1_STRFLGS_UTF8_CONVERT | XN_FLAG_SEP_MULTILINE | XN_FLAG_FN_SN`), with
 * the RDNs joined by `, ` as `parseCertificateBundle` joins its lines:
 * `C=US, O=Let's Encrypt, CN=R11`; multi-valued RDNs as `CN=a + O=b`.
 *
 * Attribute types by OpenSSL's short name (`CN`, `emailAddress`, `DC`,
 * `jurisdictionC`, `organizationIdentifier`…); values decoded by string type
 * (UTF8String; PrintableString, IA5String, TeletexString, NumericString as
 * one byte a character; BMPString as UCS-2; UniversalString as UCS-4) and
 * escaped as OpenSSL escapes them (RFC 2253 specials and leading `#`/space or
 * trailing space with `\`, control characters as `\XX`).
 *
 * Two documented differences from OpenSSL:
 * - an attribute type missing from {@link ATTRIBUTE_NAMES} is printed as its
 *   dotted OID, as OpenSSL prints an OID it does not know; OpenSSL knows a
 *   few hundred more (all of them outside the arcs names use).
 * - a SEQUENCE value (no CA puts one in a name) is printed as RFC 4514's
 *   `#` + hex of its DER, where OpenSSL prints its bytes, partly re-encoded.
 * Value types OpenSSL refuses in a name (INTEGER, OCTET STRING, VisibleString…),
 * invalid UTF-8, UCS-2 surrogates and constructed strings throw.
 */
function formatName(der: Buffer, name: Element): string {
  const rdns = canonicalChildren(der, name);
  if (rdns.length === 0) throw new InvalidCertificateError(EMPTY_ISSUER);
  const text: string[] = [];
  for (const rdn of rdns) {
    const attributes = canonicalChildren(der, expectTag(rdn, SET, 'RelativeDistinguishedName SET'));
    if (attributes.length === 0) malformed('empty RelativeDistinguishedName');
    text.push(attributes.map((attribute) => formatAttribute(der, attribute)).join(' + '));
  }
  return text.join(', ');
}

function formatAttribute(der: Buffer, attribute: Element): string {
  const [type, value, more] = canonicalChildren(der, expectTag(attribute, SEQUENCE, 'AttributeTypeAndValue SEQUENCE'));
  checkOid(der, expectTag(type ?? malformed('empty AttributeTypeAndValue'), OID, 'attribute type OID'));
  if (value === undefined || more !== undefined) malformed('AttributeTypeAndValue must hold a type and a value');
  const typeBytes = der.toString('latin1', type.start, type.end);
  return `${ATTRIBUTE_NAME_BY_OID.get(typeBytes) ?? oidText(der.subarray(type.start, type.end))}=${formatValue(der, value)}`;
}

const UTF8_STRING = 0x0c;
const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;
/**
 * Tags whose content OpenSSL prints one byte a character (Latin-1): NumericString,
 * PrintableString, TeletexString, IA5String, and the universal types it keeps
 * as opaque bytes (ObjectDescriptor, EXTERNAL, REAL, EMBEDDED PDV, RELATIVE-OID,
 * 14, 15, CHARACTER STRING).
 */
const BYTE_STRING_TAGS = new Set([0x12, 0x13, 0x14, 0x16, 0x07, 0x08, 0x09, 0x0b, 0x0d, 0x0e, 0x0f, 0x1d]);
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function formatValue(der: Buffer, value: Element): string {
  const { tag, start, end } = value;
  if (BYTE_STRING_TAGS.has(tag)) return escapeNameValue(der.toString('latin1', start, end));
  if (tag === UTF8_STRING) {
    let text: string;
    try {
      text = utf8.decode(der.subarray(start, end));
    } catch {
      malformed('invalid UTF8String');
    }
    return escapeNameValue(text);
  }
  if (tag === BMP_STRING || tag === UNIVERSAL_STRING) {
    const width = tag === BMP_STRING ? 2 : 4;
    if ((end - start) % width !== 0) malformed('truncated BMPString or UniversalString');
    let text = '';
    for (let pos = start; pos < end; pos += width) {
      const code = width === 2 ? der.readUInt16BE(pos) : der.readUInt32BE(pos);
      // OpenSSL takes BMPString as UCS-2: surrogates (even paired) are refused.
      if ((code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) malformed('invalid character in a name');
      text += String.fromCodePoint(code);
    }
    return escapeNameValue(text);
  }
  if (tag === BIT_STRING) {
    // OpenSSL prints the bits' bytes, unused bits cleared.
    const unused = der[start];
    if (end === start || unused > 7) malformed('invalid BIT STRING');
    const bytes = Buffer.from(der.subarray(start + 1, end));
    if (bytes.length > 0) bytes[bytes.length - 1] &= 0xff << unused;
    return escapeNameValue(bytes.toString('latin1'));
  }
  if (tag === SEQUENCE) return `#${der.toString('hex', value.start - headerLength(value), end).toUpperCase()}`;
  return malformed(`unsupported attribute value type 0x${tag.toString(16)}`);
}

/** Bytes of tag and length in the shortest form for `element`'s length. */
function headerLength(element: Element): number {
  const length = element.end - element.start;
  return length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : length < 0x1000000 ? 5 : 6;
}

const NEEDS_ESCAPE = /[\x00-\x1f\x7f,+"\\<>;]|^[ #]| $/;

/**
 * Escape a value as OpenSSL's `ASN1_STRFLGS_ESC_2253 | ASN1_STRFLGS_ESC_CTRL`
 * does: `,+"\<>;` always, `#` or space first, space last (a one-character
 * value counts as last only, so a lone `#` stays), controls as `\XX`;
 * characters above 0x7F are printed as they are.
 */
function escapeNameValue(text: string): string {
  if (!NEEDS_ESCAPE.test(text)) return text;
  const characters = Array.from(text);
  let out = '';
  characters.forEach((character, i) => {
    const code = character.codePointAt(0)!;
    const last = i === characters.length - 1;
    if (code < 0x20 || code === 0x7f) out += `\\${code.toString(16).toUpperCase().padStart(2, '0')}`;
    else if (',+"\\<>;'.includes(character)) out += `\\${character}`;
    else if (i === 0 && !last && (character === ' ' || character === '#')) out += `\\${character}`;
    else if (last && character === ' ') out += '\\ ';
    else out += character;
  });
  return out;
}

/**
 * An OID as OpenSSL prints one it has no name for (`OBJ_obj2txt` into an
 * 80-byte buffer): dotted decimal, cut at 79 characters; nothing at all for
 * an OID of more than 586 content bytes, which OpenSSL refuses to convert.
 */
function oidText(bytes: Uint8Array): string {
  if (bytes.length > 586) return '';
  const arcs: string[] = [];
  let value = 0n;
  for (const byte of bytes) {
    value = (value << 7n) | BigInt(byte & 0x7f);
    if (byte & 0x80) continue;
    if (arcs.length === 0) {
      const root = value < 40n ? 0n : value < 80n ? 1n : 2n;
      arcs.push(`${root}`, `${value - root * 40n}`);
    } else {
      arcs.push(`${value}`);
    }
    value = 0n;
  }
  return arcs.join('.').slice(0, 79);
}

/**
 * OpenSSL's short names (what `X509Certificate` prints) for the attribute
 * types of the arcs that names use: X.520 (`2.5.4`), PKCS #9
 * (`1.2.840.113549.1.9`), the COSINE/pilot attributes
 * (`0.9.2342.19200300.100.1`), the EV jurisdiction attributes, and the
 * Russian INN/OGRN/SNILS/OGRNIP. Taken from OpenSSL 3.0's `obj_mac.h`.
 */
const ATTRIBUTE_NAMES: ReadonlyArray<readonly [arc: string, names: string]> = [
  [
    '2.5.4',
    '3 CN 4 SN 5 serialNumber 6 C 7 L 8 ST 9 street 10 O 11 OU 12 title 13 description 14 searchGuide ' +
      '15 businessCategory 16 postalAddress 17 postalCode 18 postOfficeBox 19 physicalDeliveryOfficeName ' +
      '20 telephoneNumber 21 telexNumber 22 teletexTerminalIdentifier 23 facsimileTelephoneNumber 24 x121Address ' +
      '25 internationaliSDNNumber 26 registeredAddress 27 destinationIndicator 28 preferredDeliveryMethod ' +
      '29 presentationAddress 30 supportedApplicationContext 31 member 32 owner 33 roleOccupant 34 seeAlso ' +
      '35 userPassword 36 userCertificate 37 cACertificate 38 authorityRevocationList 39 certificateRevocationList ' +
      '40 crossCertificatePair 41 name 42 GN 43 initials 44 generationQualifier 45 x500UniqueIdentifier ' +
      '46 dnQualifier 47 enhancedSearchGuide 48 protocolInformation 49 distinguishedName 50 uniqueMember ' +
      '51 houseIdentifier 52 supportedAlgorithms 53 deltaRevocationList 54 dmdName 65 pseudonym 72 role ' +
      '97 organizationIdentifier 98 c3 99 n3 100 dnsName',
  ],
  [
    '1.2.840.113549.1.9',
    '1 emailAddress 2 unstructuredName 3 contentType 4 messageDigest 5 signingTime 6 countersignature ' +
      '7 challengePassword 8 unstructuredAddress 9 extendedCertificateAttributes 14 extReq 15 SMIME-CAPS 16 SMIME ' +
      '20 friendlyName 21 localKeyID',
  ],
  [
    '0.9.2342.19200300.100.1',
    '1 UID 2 textEncodedORAddress 3 mail 4 info 5 favouriteDrink 6 roomNumber 7 photo 8 userClass 9 host ' +
      '10 manager 11 documentIdentifier 12 documentTitle 13 documentVersion 14 documentAuthor 15 documentLocation ' +
      '20 homeTelephoneNumber 21 secretary 22 otherMailbox 23 lastModifiedTime 24 lastModifiedBy 25 DC 26 aRecord ' +
      '27 pilotAttributeType27 28 mXRecord 29 nSRecord 30 sOARecord 31 cNAMERecord 37 associatedDomain ' +
      '38 associatedName 39 homePostalAddress 40 personalTitle 41 mobileTelephoneNumber 42 pagerTelephoneNumber ' +
      '43 friendlyCountryName 44 uid 45 organizationalStatus 46 janetMailbox 47 mailPreferenceOption ' +
      '48 buildingName 49 dSAQuality 50 singleLevelQuality 51 subtreeMinimumQuality 52 subtreeMaximumQuality ' +
      '53 personalSignature 54 dITRedirect 55 audio 56 documentPublisher',
  ],
  ['1.3.6.1.4.1.311.60.2.1', '1 jurisdictionL 2 jurisdictionST 3 jurisdictionC'],
  ['1.2.643.3.131.1', '1 INN'],
  ['1.2.643.100', '1 OGRN 3 SNILS 5 OGRNIP'],
];

/** {@link ATTRIBUTE_NAMES} by OID content bytes (as a Latin-1 string). */
const ATTRIBUTE_NAME_BY_OID = new Map<string, string>(
  ATTRIBUTE_NAMES.flatMap(([arc, names]) => {
    const words = names.split(' ');
    const entries: Array<[string, string]> = [];
    for (let i = 0; i < words.length; i += 2) entries.push([oidBytes(`${arc}.${words[i]}`), words[i + 1]]);
    return entries;
  }),
);

/** DER content bytes of a dotted OID, as a Latin-1 string. */
function oidBytes(dotted: string): string {
  const [first, second, ...rest] = dotted.split('.').map(Number);
  let bytes = '';
  for (const arc of [first * 40 + second, ...rest]) {
    let chunk = String.fromCharCode(arc & 0x7f);
    for (let value = Math.floor(arc / 128); value > 0; value = Math.floor(value / 128)) {
      chunk = String.fromCharCode((value & 0x7f) | 0x80) + chunk;
    }
    bytes += chunk;
  }
  return bytes;
}

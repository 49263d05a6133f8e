/**
 * Parsing a certificate bundle into the key-free metadata the engine keeps,
 * on node:crypto alone, and the ARI certificate id.
 *
 * node-forge cannot parse ECDSA certificates (which ACME CAs issue), so the
 * leaf is parsed with `X509Certificate`. What that class does not expose (the
 * Authority Key Identifier, the serial's exact DER bytes, SAN entries without
 * the quoting of its text form) is read by a small bounds-checked DER walker
 * (`fields.ts`). `forge.asn1.fromDer` would decode as fast (both take a few µs against
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
import { InvalidCertificateError } from '../errors.js';
import { onlyPemBlock, pemToDer, splitPemChain } from '../pem.js';
import type { CertificateBundle, CertificateMeta } from '../types.js';
import { readCertificateFields, readLeaf, type CertificateFields } from './fields.js';
import { decodedKeyOf } from './decoded-keys.js';
import { EMPTY_ISSUER } from './issuer-name.js';

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
  // Decoded by its issuer already (decoded-keys.ts): still compared with the certificate below.
  const key = decodedKeyOf(bundle) ?? parsePrivateKey(bundle.privateKeyPem);
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


/** `parseCertificateBundle` with `checkKey: false`: the same metadata, from the leaf's DER alone. */
function leafMetaFromDer(leafPem: string, issuerId: string): CertificateMeta {
  const der = pemToDer(leafPem);
  const leaf = readLeaf(der);
  const id = ariCertIdOf(leaf.fields);
  const { dnsNames, ipAddresses } = leaf.fields;
  // Every property in the literal (none added later: that would cost a property array, 40 B a name asleep).
  return {
    fingerprint: fingerprint256(der),
    serial: serialText(leaf.fields.serial),
    // The usual single name without a spread's spare capacity.
    names: ipAddresses.length === 0 && dnsNames.length === 1 ? [dnsNames[0]!] : [...dnsNames, ...ipAddresses],
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    // 100,000 certificates from a handful of CAs: one copy of each issuer text, not one per certificate.
    issuer: intern(leaf.issuer),
    issuerId: intern(issuerId),
    ...(id !== undefined ? { ariCertId: id } : {}),
  };
}

/** Issuer texts and ids seen, bounded (a hostile store could hold many distinct ones). */
const interned = new Map<string, string>();
/** One copy of a text seen often (issuer names and ids: a handful across every certificate), bounded. */
export function intern(text: string): string {
  const known = interned.get(text);
  if (known !== undefined) return known;
  if (interned.size < 1024) interned.set(text, text);
  return text;
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

/** DER types of the traditional key PEM labels. */
const TRADITIONAL_KEYS: Record<string, 'pkcs1' | 'sec1'> = { 'RSA PRIVATE KEY': 'pkcs1', 'EC PRIVATE KEY': 'sec1' };

function parsePrivateKey(pem: string): KeyObject {
  try {
    // OpenSSL 3 tries every decoder on PEM (~0.5 ms a key); a traditional key
    // handed over as typed DER skips that search and parses about 3× faster.
    const block = onlyPemBlock(pem);
    const type = block && TRADITIONAL_KEYS[block.label];
    if (block && type) return createPrivateKey({ key: block.der, format: 'der', type });
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

/**
 * Reading a certificate's fields from its DER: serial, AKI and SAN (what
 * `X509Certificate` does not expose as bytes), and for `checkKey: false` the
 * whole leaf as RFC 5280 §4.1 lays it out (validity and issuer name read, the
 * rest checked for shape). Every read is bounds checked; the only error is
 * `InvalidCertificateError`.
 */
import { ipFromBytes } from '../ip.js';
import { BIT_STRING, BOOLEAN, INTEGER, NULL, OCTET_STRING, OID, SEQUENCE, canonicalChildren, checkOid, children, expectTag, malformed, readCanonical, readElement, bytesEqual, type Element } from './der.js';
import { formatName } from './issuer-name.js';

/** The fields read from the DER that `X509Certificate` does not expose as bytes. */
export interface CertificateFields {
  /** Content bytes of the serial INTEGER (with its sign byte, if any). */
  serial: Uint8Array;
  /** AKI keyIdentifier bytes. */
  authorityKeyId?: Uint8Array;
  dnsNames: string[];
  ipAddresses: string[];
}


const VERSION_TAG = 0xa0; // [0] EXPLICIT Version
const EXTENSIONS_TAG = 0xa3; // [3] EXPLICIT Extensions
const AKI_KEY_ID_TAG = 0x80; // [0] IMPLICIT KeyIdentifier
const SAN_DNS_TAG = 0x82; // [2] IMPLICIT IA5String
const SAN_IP_TAG = 0x87; // [7] IMPLICIT OCTET STRING
const OID_AUTHORITY_KEY_IDENTIFIER = [0x55, 0x1d, 0x23]; // 2.5.29.35
const OID_SUBJECT_ALT_NAME = [0x55, 0x1d, 0x11]; // 2.5.29.17
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const ISSUER_UNIQUE_ID_TAG = 0x81; // [1] IMPLICIT BIT STRING
const SUBJECT_UNIQUE_ID_TAG = 0x82; // [2] IMPLICIT BIT STRING

/**
 * Read serial, AKI and SAN from a certificate's DER. Every read is bounds
 * checked; the only error this throws is `InvalidCertificateError`.
 */
export function readCertificateFields(der: Uint8Array): CertificateFields {
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
          const ip = ipFromBytes(content);
          if (ip !== undefined) fields.ipAddresses.push(ip);
        }
      }
    }
  }
  return fields;
}

// ─── The leaf from its DER alone (checkKey: false) ─────────────────────────

/** What `checkKey: false` reads from the leaf, besides the fingerprint. */
export interface LeafSummary {
  fields: CertificateFields;
  notBefore: number;
  notAfter: number;
  /** Issuer name, formatted as `parseCertificateBundle` formats `X509Certificate#issuer`. */
  issuer: string;
}

/**
 * Walk a whole certificate as RFC 5280 §4.1 lays it out: serial, validity,
 * issuer name, SAN and AKI are read, the rest is checked for shape only (tags,
 * order, lengths). Bounds checked; throws only `InvalidCertificateError`.
 */
export function readLeaf(der: Buffer): LeafSummary {
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

/** The public key's SubjectPublicKeyInfo element of a certificate, for its algorithm. */
export function subjectPublicKeyInfo(der: Uint8Array): Element | undefined {
  const certificate = readElement(der, 0, der.length);
  const items = children(der, readElement(der, certificate.start, certificate.end));
  return items[(items[0]?.tag === VERSION_TAG ? 1 : 0) + 5];
}

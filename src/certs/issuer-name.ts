/**
 * An X.501 Name printed as OpenSSL prints it (`X509Certificate#issuer`), from
 * the DER alone: the `checkKey: false` parse must give the same issuer text
 * as the OpenSSL path without asking OpenSSL.
 */
import { BIT_STRING, OID, SEQUENCE, SET, canonicalChildren, checkOid, expectTag, headerLength, malformed, type Element } from './der.js';
import { InvalidCertificateError } from '../errors.js';

/** The error of a certificate whose issuer name is empty (OpenSSL prints nothing). */
export const EMPTY_ISSUER = 'certificate issuer name is empty';

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
export function formatName(der: Buffer, name: Element): string {
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

/**
 * `parseCertificateBundle(…, { checkKey: false })` reads the metadata from the
 * leaf's DER alone. Whatever it returns must be what the OpenSSL path
 * (`checkKey: true`) returns: checked here on local-CA leaves (RSA, ECDSA,
 * Ed25519), on forge-built leaves with the issuer names, serials, validity
 * encodings and SANs real CAs produce, byte by byte on the escaping of issuer
 * values, and differentially on random names and random mutations. Hostile
 * DER throws `InvalidCertificateError` only; a mismatched key passes the fast
 * parse and is refused when the TLS context is built.
 */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import forge from 'node-forge';
import pino from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { buildSecureContext, parseCertificateBundle } from '../src/certs.js';
import { parseStoredCertificate, serializeStoredCertificate } from '../src/engine/stored.js';
import { CorruptStorageError, InvalidCertificateError } from '../src/errors.js';
import type { CertificateBundle, CertificateMeta, Storage } from '../src/types.js';
import { testLeafKey } from './helpers/scripted-issuer.js';

import { SHA256_WITH_RSA, certificateOf, childrenOf, forgeLeaf, loadTestCa, oidDer, pemOf, readTlv, tbsItems, tlv, withTbsItem, type Bytes, type TestCa } from './helpers/der.js';

// ─── Names ──────────────────────────────────────────────────────────────────

const UTF8 = 0x0c;
const PRINTABLE = 0x13;
const T61 = 0x14;
const IA5 = 0x16;
const BMP = 0x1e;
const UNIVERSAL = 0x1c;
const NUMERIC = 0x12;

/** One AttributeTypeAndValue: a string value is UTF-8 for UTF8String, Latin-1 otherwise. */
type Atv = readonly [oid: string, tag: number, value: string | Bytes];

function nameDer(rdns: ReadonlyArray<readonly Atv[]>): Buffer {
  return tlv(
    0x30,
    ...rdns.map((rdn) =>
      tlv(
        0x31,
        ...rdn.map(([oid, tag, value]) =>
          tlv(0x30, oidDer(oid), tlv(tag, typeof value === 'string' ? Buffer.from(value, tag === UTF8 ? 'utf8' : 'latin1') : value)),
        ),
      ),
    ),
  );
}


function keyPem(key: KeyObject, format: 'traditional' | 'pkcs8' = 'traditional'): string {
  const type = format === 'pkcs8' ? 'pkcs8' : key.asymmetricKeyType === 'rsa' ? 'pkcs1' : key.asymmetricKeyType === 'ec' ? 'sec1' : 'pkcs8';
  return key.export({ type, format: 'pem' }) as string;
}

function bundleOf(der: Uint8Array, key: KeyObject, chainPem = ''): CertificateBundle {
  return { certificatePem: pemOf(der) + chainPem, privateKeyPem: keyPem(key) };
}

/** Both modes, which must agree exactly; the checked meta is returned. */
function assertSameMeta(bundle: CertificateBundle, label: string): CertificateMeta {
  const checked = parseCertificateBundle(bundle, 'test');
  const fast = parseCertificateBundle(bundle, 'test', { checkKey: false });
  assert.deepEqual(fast, checked, label);
  return checked;
}

type Outcome = { ok: true; meta: CertificateMeta } | { ok: false; error: unknown };

function outcome(fn: () => CertificateMeta): Outcome {
  try {
    return { ok: true, meta: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

function assertInvalid(fn: () => unknown, label: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof InvalidCertificateError, `${label}: expected InvalidCertificateError, got ${String(error)}`);
    return true;
  }, label);
}

function issueContext(storage: Storage) {
  return { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: Date.now };
}

/** The fast issuer shows one of the two documented fallbacks (dotted OID for a type outside the table, `#hex` for a SEQUENCE value). */
const FALLBACK = /(^|, | \+ )\d+(\.\d+)+=|=#/;

// ─── Tests ─────────────────────────────────────────────────────────────────

let ca: TestCa;
const rsaKey = () => testLeafKey();
const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const ec384Key = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
const ed25519Key = generateKeyPairSync('ed25519').privateKey;

before(async () => {
  ca = await loadTestCa();
});

describe('checkKey: false gives the metadata checkKey: true gives', () => {
  it('for local-CA leaves (RSA): wildcards, IPv4/IPv6, long names, many names', async () => {
    const issuer = localCaIssuer({ leafKey: rsaKey() });
    const nameSets = [
      ['localhost'],
      ['a.example', '*.example', '127.0.0.1', '::1', '2001:db8::1', '::ffff:1.2.3.4', 'fe80::1:0:0:1'],
      ['*.wild.example.com'],
      [`${'x'.repeat(63)}.${'y'.repeat(63)}.example`], // longer than 64: no CN in the subject
      Array.from({ length: 40 }, (_, i) => `n${i}.many.example`),
      ['MiXeD.Example.ORG', '10.0.0.1'],
    ];
    for (const names of nameSets) {
      const bundle = await issuer.issue({ names }, issueContext(ca.storage));
      const meta = assertSameMeta(bundle, names.join(','));
      assert.equal(meta.issuer, 'CN=certstate local CA');
      assert.ok(meta.ariCertId);
    }
    // 30 more, for serial variety (random 16-byte serials, a sign byte in about half).
    let withSignByte = 0;
    for (let i = 0; i < 30; i++) {
      const bundle = await issuer.issue({ names: [`s${i}.example`] }, issueContext(ca.storage));
      const meta = assertSameMeta(bundle, `serial ${i}`);
      if (meta.serial.length === 32 && parseInt(meta.serial[0], 16) >= 8) withSignByte++;
    }
    assert.ok(withSignByte > 0, 'at least one serial with its high bit set');
  });

  it('for ECDSA (P-256, P-384) and Ed25519 leaves signed by the local CA, keys in SEC1 and PKCS#8', () => {
    const altNames = [
      { type: 2, value: 'ec.example' },
      { type: 2, value: '*.EC.Example' },
      { type: 7, ip: '192.0.2.1' },
      { type: 7, ip: '2001:db8::42' },
    ];
    for (const [label, key] of [['P-256', ecKey], ['P-384', ec384Key], ['Ed25519', ed25519Key]] as const) {
      const der = forgeLeaf(ca, { publicKey: createPublicKey(key), altNames, serialHex: '00ff00112233445566778899aabbccddee' });
      for (const format of ['traditional', 'pkcs8'] as const) {
        const bundle = { certificatePem: pemOf(der) + ca.pem, privateKeyPem: keyPem(key, format) };
        const meta = assertSameMeta(bundle, `${label} ${format}`);
        assert.deepEqual(meta.names, ['ec.example', '*.ec.example', '192.0.2.1', '2001:db8::42']);
        assert.equal(meta.serial, 'FF00112233445566778899AABBCCDDEE');
      }
    }
  });

  it('for issuer names real CAs use: C/ST/L/O/OU/CN, emailAddress, DC, serialNumber, EV attributes, UTF-8', () => {
    const utf8 = (shortName: string, value: string) => ({ shortName, value, valueTagClass: forge.asn1.Type.UTF8 as unknown as forge.asn1.Class });
    const typed = (type: string, value: string, tag: number) => ({ type, value, valueTagClass: tag as unknown as forge.asn1.Class });
    const cases: Array<[forge.pki.CertificateField[], string]> = [
      [[{ shortName: 'C', value: 'US' }, { shortName: 'O', value: "Let's Encrypt" }, { shortName: 'CN', value: 'R11' }], "C=US, O=Let's Encrypt, CN=R11"],
      [
        [{ shortName: 'C', value: 'US' }, { shortName: 'O', value: '(STAGING) Let\'s Encrypt' }, { shortName: 'CN', value: '(STAGING) Ersatz Edamame E1' }],
        "C=US, O=(STAGING) Let's Encrypt, CN=(STAGING) Ersatz Edamame E1",
      ],
      [
        [
          { shortName: 'C', value: 'DE' },
          { shortName: 'ST', value: 'Bayern' },
          utf8('L', 'München'),
          { shortName: 'O', value: 'Beispiel GmbH' },
          { shortName: 'OU', value: 'IT' },
          { shortName: 'CN', value: 'Beispiel CA 1' },
          typed('1.2.840.113549.1.9.1', 'ca@beispiel.de', IA5),
        ],
        'C=DE, ST=Bayern, L=München, O=Beispiel GmbH, OU=IT, CN=Beispiel CA 1, emailAddress=ca@beispiel.de',
      ],
      [
        [typed('0.9.2342.19200300.100.1.25', 'com', IA5), typed('0.9.2342.19200300.100.1.25', 'example', IA5), utf8('CN', 'Example Issuing CA')],
        'DC=com, DC=example, CN=Example Issuing CA',
      ],
      [
        [utf8('CN', '日本語 認証局'), utf8('O', 'Société Générale'), utf8('L', 'Zürich'), utf8('OU', 'Ünïcødé 😀 ✓')],
        'CN=日本語 認証局, O=Société Générale, L=Zürich, OU=Ünïcødé 😀 ✓',
      ],
      [
        [
          typed('1.3.6.1.4.1.311.60.2.1.3', 'DE', PRINTABLE),
          typed('1.3.6.1.4.1.311.60.2.1.2', 'Berlin', UTF8),
          typed('2.5.4.15', 'Private Organization', UTF8),
          typed('2.5.4.5', 'HRB 12345', PRINTABLE),
          typed('2.5.4.97', 'VATDE-123456789', UTF8),
          typed('0.9.2342.19200300.100.1.1', 'uid-1', UTF8),
          typed('2.5.4.9', 'Hauptstraße 1', UTF8),
          typed('2.5.4.17', '10115', UTF8),
        ],
        'jurisdictionC=DE, jurisdictionST=Berlin, businessCategory=Private Organization, serialNumber=HRB 12345, ' +
          'organizationIdentifier=VATDE-123456789, UID=uid-1, street=Hauptstraße 1, postalCode=10115',
      ],
      [
        [utf8('O', 'Acme, Inc.'), utf8('OU', 'A+B'), utf8('CN', '#1 "quoted" <x>; back\\slash'), utf8('L', ' padded ')],
        'O=Acme\\, Inc., OU=A\\+B, CN=\\#1 \\"quoted\\" \\<x\\>\\; back\\\\slash, L=\\ padded\\ ',
      ],
      [[utf8('CN', 'tab\there\r\nnewline\u007f'), utf8('O', '#')], 'CN=tab\\09here\\0D\\0Anewline\\7F, O=#'],
      [[typed('1.3.6.1.4.1.99999.1.2', 'private attribute', UTF8), { shortName: 'CN', value: 'x' }], '1.3.6.1.4.1.99999.1.2=private attribute, CN=x'],
      [[typed('2.5.4.3', 'T\xe9l\xe9tex \xff', T61), typed('2.5.4.10', '0123 456', NUMERIC)], 'CN=Télétex ÿ, O=0123 456'],
      [[typed('2.5.4.3', 'BMP ☃ é', BMP)], 'CN=BMP ☃ é'],
      [[typed('2.5.4.3', Buffer.from([0, 0, 0, 0x55, 0, 1, 0xf6, 0x00]).toString('binary'), UNIVERSAL)], 'CN=U😀'],
    ];
    for (const [issuer, expected] of cases) {
      const meta = assertSameMeta(bundleOf(forgeLeaf(ca, { issuer }), rsaKey()), expected);
      assert.equal(meta.issuer, expected);
    }
  });

  it('for multi-valued RDNs and the RDN sequence as the DER holds it', () => {
    const base = forgeLeaf(ca);
    const name = nameDer([[['2.5.4.3', UTF8, 'a'], ['2.5.4.10', PRINTABLE, 'b']], [['2.5.4.6', PRINTABLE, 'FR']], [['2.5.4.11', UTF8, 'x'], ['2.5.4.11', UTF8, 'y'], ['2.5.4.7', UTF8, 'z']]]);
    const meta = assertSameMeta(bundleOf(withTbsItem(base, 3, name), rsaKey()), 'multi-valued');
    assert.equal(meta.issuer, 'CN=a + O=b, C=FR, OU=x + OU=y + L=z');
  });

  it('for serials: high bit with sign byte, negative, zero, one byte, 20 bytes', () => {
    const serials: Array<[string, string]> = [
      ['00ff00112233445566778899aabbccdd', 'FF00112233445566778899AABBCCDD'],
      ['0080', '80'],
      ['7f' + 'ab'.repeat(19), '7F' + 'AB'.repeat(19)],
      ['01', '01'],
      ['00', '0'],
      ['0abc', '0ABC'],
      ['ff01', '-FF'],
      ['80', '-80'],
      ['ff', '-01'],
    ];
    for (const [hex, expected] of serials) {
      const meta = assertSameMeta(bundleOf(forgeLeaf(ca, { serialHex: hex }), rsaKey()), `serial ${hex}`);
      assert.equal(meta.serial, expected);
    }
  });

  it('for validity in UTCTime and GeneralizedTime (2050 and later), at the edges of each', () => {
    const dates: Array<[string, string]> = [
      ['1950-01-01T00:00:00Z', '2049-12-31T23:59:59Z'], // both UTCTime, the extremes of its window
      ['2049-12-31T23:59:59Z', '2050-01-01T00:00:00Z'], // UTCTime then GeneralizedTime
      ['2000-02-29T12:00:00Z', '9999-12-31T23:59:59Z'],
      ['2024-02-29T00:00:00Z', '2100-02-28T23:59:59Z'],
    ];
    for (const [from, to] of dates) {
      const meta = assertSameMeta(bundleOf(forgeLeaf(ca, { notBefore: new Date(from), notAfter: new Date(to) }), rsaKey()), `${from} ${to}`);
      assert.equal(meta.notBefore, Date.parse(from));
      assert.equal(meta.notAfter, Date.parse(to));
    }
    // GeneralizedTime before 2050, as some CAs write it.
    const generalized = tlv(0x30, tlv(0x18, Buffer.from('20250101000000Z')), tlv(0x18, Buffer.from('20260101000000Z')));
    assertSameMeta(bundleOf(withTbsItem(forgeLeaf(ca), 4, generalized), rsaKey()), 'GeneralizedTime 2025');
  });

  it('for SAN variety, no SAN, no AKI, and PEM with CRLF, one line, or 76 columns', () => {
    const altNames = [
      { type: 2, value: 'WWW.Example.COM' },
      { type: 2, value: '*.example.com' },
      { type: 7, ip: '0.0.0.0' },
      { type: 7, ip: '::' },
      { type: 7, ip: '2001:db8:0:0:1:0:0:1' },
      { type: 1, value: 'hostmaster@example.com' }, // rfc822Name: ignored
      { type: 6, value: 'https://example.com/' }, // URI: ignored
    ];
    assert.deepEqual(assertSameMeta(bundleOf(forgeLeaf(ca, { altNames }), rsaKey()), 'SANs').names, [
      'www.example.com', '*.example.com', '0.0.0.0', '::', '2001:db8::1:0:0:1',
    ]);
    const bare = assertSameMeta(bundleOf(forgeLeaf(ca, { aki: false }), rsaKey()), 'no SAN, no AKI');
    assert.deepEqual(bare.names, []);
    assert.equal('ariCertId' in bare, false);

    const der = forgeLeaf(ca, { altNames });
    const base64 = der.toString('base64');
    for (const certificatePem of [
      pemOf(der).replace(/\n/g, '\r\n'),
      `-----BEGIN CERTIFICATE-----\n${base64}\n-----END CERTIFICATE-----\n`,
      `-----BEGIN CERTIFICATE-----\n${base64.replace(/.{76}/g, '$&\n')}\n-----END CERTIFICATE-----\n`,
    ]) {
      assertSameMeta({ certificatePem, privateKeyPem: keyPem(rsaKey()) }, 'PEM layout');
    }
  });

  it('for every attribute type of the name arcs, named by OpenSSL or not (the table matches this OpenSSL)', () => {
    const base = forgeLeaf(ca);
    const arcs: Array<[string, number]> = [
      ['2.5.4', 110],
      ['1.2.840.113549.1.9', 30],
      ['0.9.2342.19200300.100.1', 60],
      ['1.3.6.1.4.1.311.60.2.1', 5],
      ['1.2.643.3.131.1', 3],
      ['1.2.643.100', 6],
    ];
    for (const [arc, last] of arcs) {
      for (let n = 0; n <= last; n++) {
        const name = nameDer([[[`${arc}.${n}`, UTF8, 'v']], [['2.5.4.3', UTF8, 'x']]]);
        assertSameMeta(bundleOf(withTbsItem(base, 3, name), rsaKey()), `${arc}.${n}`);
      }
    }
    // Long OIDs: OpenSSL cuts the text at 79 characters, and prints nothing past 586 content bytes.
    for (const count of [3, 40, 195, 196, 300]) {
      const oid = `1.2.${Array(count).fill('123456').join('.')}`;
      assertSameMeta(bundleOf(withTbsItem(base, 3, nameDer([[[oid, UTF8, 'v']]])), rsaKey()), `OID of ${count} arcs`);
    }
  });

  it('escapes every byte of an issuer value as OpenSSL does, first, last, alone and inside', () => {
    const base = forgeLeaf(ca);
    for (let byte = 0; byte < 256; byte++) {
      const b = String.fromCharCode(byte);
      const values = [b, `${b}x`, `x${b}`, `x${b}y`, `${b}${b}`];
      const rdns: Atv[][] = values.map((value) => [['2.5.4.3', T61, value]]);
      if (byte < 0x80) rdns.push(...values.map((value): Atv[] => [['2.5.4.10', UTF8, value]]));
      assertSameMeta(bundleOf(withTbsItem(base, 3, nameDer(rdns)), rsaKey()), `byte 0x${byte.toString(16)}`);
    }
  });

  it('agrees with OpenSSL on random names: same result, or both refuse (property)', () => {
    const base = forgeLeaf(ca);
    const privateKeyPem = keyPem(rsaKey());
    const oids = ['2.5.4.3', '2.5.4.6', '2.5.4.10', '1.2.840.113549.1.9.1', '0.9.2342.19200300.100.1.25', '2.5.4.97', '1.3.6.1.4.1.311.60.2.1.3', '1.2.3.4', '2.999.1'];
    // String types, the opaque types OpenSSL prints as bytes, and some it refuses (INTEGER, OCTET STRING, VisibleString, SET).
    const tags = [UTF8, PRINTABLE, IA5, T61, NUMERIC, BMP, UNIVERSAL, 0x03, 0x07, 0x0d, 0x02, 0x04, 0x1a, 0x31];
    const value = fc.oneof(
      fc.uint8Array({ maxLength: 12 }),
      fc.string({ maxLength: 8 }).map((s) => new Uint8Array(Buffer.from(s, 'utf8'))),
      fc.array(fc.constantFrom(0x20, 0x23, 0x2c, 0x2b, 0x5c, 0x00, 0x41, 0xe9), { maxLength: 6 }).map((a) => new Uint8Array(a)),
    );
    const atv = fc.tuple(fc.constantFrom(...oids), fc.constantFrom(...tags), value);
    const name = fc.array(fc.array(atv, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(name, (rdns) => {
        const bundle = { certificatePem: pemOf(withTbsItem(base, 3, nameDer(rdns))), privateKeyPem };
        const checked = outcome(() => parseCertificateBundle(bundle, 'x'));
        const fast = outcome(() => parseCertificateBundle(bundle, 'x', { checkKey: false }));
        if (!fast.ok) assert.ok(fast.error instanceof InvalidCertificateError, String(fast.error));
        assert.equal(fast.ok, checked.ok, `fast ${fast.ok ? 'accepted' : 'refused'} what OpenSSL ${checked.ok ? 'accepted' : 'refused'}`);
        if (fast.ok && checked.ok) assert.deepEqual(fast.meta, checked.meta);
      }),
      { numRuns: 400 },
    );
  });
});

describe('checkKey: false on hostile input', () => {
  const fast = (certificatePem: string) => parseCertificateBundle({ certificatePem, privateKeyPem: 'k' }, 'x', { checkKey: false });
  const fastDer = (der: Uint8Array) => fast(pemOf(der));

  it('throws InvalidCertificateError for truncated DER, at every length', () => {
    const der = forgeLeaf(ca, { altNames: [{ type: 2, value: 'a.example' }] });
    for (let length = 0; length < der.length; length++) assertInvalid(() => fastDer(der.subarray(0, length)), `truncated to ${length}`);
  });

  it('throws InvalidCertificateError for wrong tags, lengths past the end, BER lengths, trailing data', () => {
    const der = forgeLeaf(ca);
    const items = tbsItems(der);
    const retag = (item: Buffer, tag: number) => Buffer.concat([Buffer.from([tag]), item.subarray(1)]);
    const outer = readTlv(der, 0);
    const content = der.subarray(outer.start);
    const cases: Array<[string, Uint8Array]> = [
      ['empty', Buffer.alloc(0)],
      ['outer SET', retag(der, 0x31)],
      ['outer high tag number', retag(der, 0x3f)],
      ['outer length past the end', Buffer.concat([Buffer.from([0x30, 0x82, (content.length + 1) >> 8, (content.length + 1) & 0xff]), content])],
      ['outer indefinite length', Buffer.concat([Buffer.from([0x30, 0x80]), content, Buffer.from([0, 0])])],
      ['outer length in 5 octets', Buffer.concat([Buffer.from([0x30, 0x85, 0, 0, 0, content.length >> 8, content.length & 0xff]), content])],
      ['outer length not minimal', Buffer.concat([Buffer.from([0x30, 0x83, 0, content.length >> 8, content.length & 0xff]), content])],
      ['trailing data', Buffer.concat([der, Buffer.from([0x05, 0x00])])],
      ['serial as OCTET STRING', withTbsItem(der, 1, retag(items[1], 0x04))],
      ['serial empty', withTbsItem(der, 1, Buffer.from([0x02, 0x00]))],
      ['serial not minimal', withTbsItem(der, 1, Buffer.from([0x02, 0x02, 0x00, 0x01]))],
      ['serial padded negative', withTbsItem(der, 1, Buffer.from([0x02, 0x02, 0xff, 0x80]))],
      ['issuer as SET', withTbsItem(der, 3, retag(items[3], 0x31))],
      ['validity as SET', withTbsItem(der, 4, retag(items[4], 0x31))],
      ['SPKI missing', certificateOf(items.slice(0, 6))],
      ['extensions before SPKI', certificateOf([...items.slice(0, 6), items[7], items[6]])],
      ['inner length past its parent', withTbsItem(der, 3, Buffer.from([0x30, 0x05, 0x31, 0x09, 0x30, 0x01, 0x00]))],
      ['version not an INTEGER', withTbsItem(der, 0, Buffer.from([0xa0, 0x03, 0x04, 0x01, 0x02]))],
      ['unused bits in the signature', tlv(0x30, childrenOf(der, outer).slice(0, 2).map((e) => der.subarray(e.pos, e.end)).reduce((a, b) => Buffer.concat([a, b])), tlv(0x03, [0x07, 0x80]))],
      ['signature algorithm with an OCTET STRING parameter', tlv(0x30, tlv(0x30, ...items), tlv(0x30, oidDer('1.2.840.113549.1.1.11'), [0x04, 0x00]), tlv(0x03, [0x00, 0x01]))],
      ['no signature', tlv(0x30, tlv(0x30, ...items), SHA256_WITH_RSA)],
      ['data after the signature', tlv(0x30, tlv(0x30, ...items), SHA256_WITH_RSA, tlv(0x03, [0x00, 0x01]), [0x05, 0x00])],
    ];
    for (const [label, bytes] of cases) assertInvalid(() => fastDer(bytes), label);
  });

  it('throws InvalidCertificateError for bad times', () => {
    const der = forgeLeaf(ca);
    const validity = (a: Buffer, b: Buffer) => withTbsItem(der, 4, tlv(0x30, a, b));
    const utc = (text: string) => tlv(0x17, Buffer.from(text, 'latin1'));
    const generalized = (text: string) => tlv(0x18, Buffer.from(text, 'latin1'));
    const good = utc('250101000000Z');
    const bad = [
      utc('250230000000Z'), // 30 February
      utc('230229000000Z'), // 29 February, not a leap year
      generalized('21000229000000Z'), // 2100 is not a leap year
      utc('251301000000Z'), // month 13
      utc('250001000000Z'), // month 0
      utc('250100000000Z'), // day 0
      utc('250101240000Z'), // 24:00
      utc('250101006000Z'), // minute 60
      utc('250101000060Z'), // leap second
      utc('2501010000Z'), // no seconds
      utc('250101000000'), // no Z
      utc('250101000000+0100'), // offset
      utc('25010100000Z0'),
      utc('2501010000 0Z'),
      utc('25-1-1000000Z'),
      generalized('20250101000000.5Z'), // fraction
      generalized('250101000000Z'), // UTCTime digits in a GeneralizedTime
      utc('20250101000000Z'), // GeneralizedTime digits in a UTCTime
      tlv(0x04, Buffer.from('250101000000Z')), // not a time
      Buffer.from([0x17, 0x00]),
    ];
    for (const time of bad) {
      assertInvalid(() => fastDer(validity(good, time)), `notAfter ${time.toString('latin1')}`);
      assertInvalid(() => fastDer(validity(time, good)), `notBefore ${time.toString('latin1')}`);
    }
    assertInvalid(() => fastDer(withTbsItem(der, 4, tlv(0x30, good))), 'one time');
    assertInvalid(() => fastDer(withTbsItem(der, 4, tlv(0x30, good, good, good))), 'three times');
  });

  it('throws InvalidCertificateError for malformed issuer names (OpenSSL refuses them too)', () => {
    const der = forgeLeaf(ca);
    const privateKeyPem = keyPem(rsaKey());
    const names: Array<[string, Buffer]> = [
      ['empty name', tlv(0x30)],
      ['empty RDN', tlv(0x30, tlv(0x31))],
      ['ATV with three elements', tlv(0x30, tlv(0x31, tlv(0x30, oidDer('2.5.4.3'), tlv(UTF8, [0x41]), tlv(UTF8, [0x42]))))],
      ['ATV without value', tlv(0x30, tlv(0x31, tlv(0x30, oidDer('2.5.4.3'))))],
      ['OID padded with 0x80', tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, [0x55, 0x80, 0x04]), tlv(UTF8, [0x41]))))],
      ['OID unterminated', tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, [0x55, 0x84]), tlv(UTF8, [0x41]))))],
      ['invalid UTF-8', nameDer([[['2.5.4.3', UTF8, [0xc0, 0x80]]]])],
      ['UTF-8 surrogate', nameDer([[['2.5.4.3', UTF8, [0xed, 0xa0, 0x80]]]])],
      ['UTF-8 past U+10FFFF', nameDer([[['2.5.4.3', UTF8, [0xf4, 0x90, 0x80, 0x80]]]])],
      ['odd BMPString', nameDer([[['2.5.4.3', BMP, [0x00, 0x41, 0x00]]]])],
      ['BMPString surrogate pair', nameDer([[['2.5.4.3', BMP, [0xd8, 0x3d, 0xde, 0x00]]]])],
      ['UniversalString past U+10FFFF', nameDer([[['2.5.4.3', UNIVERSAL, [0x00, 0x11, 0x00, 0x00]]]])],
      ['INTEGER value', nameDer([[['2.5.4.3', 0x02, [0x01]]]])],
      ['VisibleString value', nameDer([[['2.5.4.3', 0x1a, [0x41]]]])],
      ['BIT STRING with 8 unused bits', nameDer([[['2.5.4.3', 0x03, [0x08, 0x41]]]])],
    ];
    for (const [label, name] of names) {
      const certificate = withTbsItem(der, 3, name);
      assertInvalid(() => fastDer(certificate), label);
      assertInvalid(() => parseCertificateBundle({ certificatePem: pemOf(certificate), privateKeyPem }, 'x'), `${label} (checkKey: true)`);
    }
  });

  it('throws InvalidCertificateError for PEM bodies that are not base64, and for a missing or non-string bundle', () => {
    const pem = pemOf(forgeLeaf(ca));
    const lines = pem.split('\n');
    for (const certificatePem of [
      pem.replace(/\n([A-Za-z0-9+/])/, '\n!$1'),
      pem.replace(/\n([A-Za-z0-9+/]{4})/, '\n$1=='),
      pem.replace(/\n([A-Za-z0-9+/]{4})/, '\n$1=A=A'),
      pem.replace(/\n([A-Za-z0-9+/]{4})/, '\n$1AAA='),
      pem.replace(/\n([A-Za-z0-9+/]{3})[A-Za-z0-9+/]/, '\n$1_'), // base64url, which Node's decoder would take
      pem.replace(/\n([A-Za-z0-9+/]{3})[A-Za-z0-9+/]/, '\n$1\u00e9'),
      [lines[0], lines[1].slice(1), ...lines.slice(2)].join('\n'), // one character short
      '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n',
      '',
      'garbage',
    ]) {
      assertInvalid(() => fast(certificatePem), JSON.stringify(certificatePem.slice(0, 40)));
    }
    assertInvalid(() => parseCertificateBundle({ certificatePem: pem, privateKeyPem: null } as never, 'x', { checkKey: false }), 'key not a string');
    assertInvalid(() => parseCertificateBundle({ certificatePem: 42, privateKeyPem: 'k' } as never, 'x', { checkKey: false }), 'certificate not a string');
    assertInvalid(() => parseCertificateBundle(undefined as never, 'x', { checkKey: false }), 'no bundle');
  });

  it('accepts a PEM body only when it is strict base64 (property)', () => {
    const pem = pemOf(forgeLeaf(ca));
    const strict = /^[A-Za-z0-9+/]*={0,2}$/;
    const noise = fc.string({ unit: fc.constantFrom('A', '/', '+', '=', '_', '-', '!', ' ', '\n', '\t', '\r', 'é', '\u0000'), maxLength: 4 });
    fc.assert(
      fc.property(fc.nat(pem.length - 1), noise, fc.nat(6), (at, insert, cut) => {
        const certificatePem = pem.slice(0, at) + insert + pem.slice(Math.min(pem.length, at + cut));
        let accepted = false;
        try {
          fast(certificatePem);
          accepted = true;
        } catch (error) {
          assert.ok(error instanceof InvalidCertificateError, String(error));
        }
        if (accepted) {
          const body = /-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----/.exec(certificatePem)![1].replace(/[\t\n\v\f\r ]+/g, '');
          assert.match(body, strict);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('random byte mutations of valid DER throw only InvalidCertificateError, never hang, and never disagree with OpenSSL (property)', () => {
    const rich = forgeLeaf(ca, {
      issuer: [
        { shortName: 'C', value: 'DE' },
        { shortName: 'O', value: 'Mutant, Inc.', valueTagClass: forge.asn1.Type.UTF8 as unknown as forge.asn1.Class },
        { type: '1.2.840.113549.1.9.1', value: 'ca@example.de', valueTagClass: IA5 as unknown as forge.asn1.Class },
        { shortName: 'CN', value: 'Mutant CA' },
      ],
      altNames: [{ type: 2, value: 'm.example' }, { type: 7, ip: '192.0.2.7' }],
      notAfter: new Date('2051-06-01T00:00:00Z'),
      serialHex: '00c0ffee',
    });
    const bases: Array<[Buffer, KeyObject]> = [
      [rich, rsaKey()],
      [forgeLeaf(ca, { publicKey: createPublicKey(ecKey), altNames: [{ type: 2, value: 'ec.example' }] }), ecKey],
    ];
    const mutation = fc.record({
      base: fc.nat(bases.length - 1),
      edits: fc.array(
        fc.oneof(
          fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
          fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }),
          fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 4 }) }),
          fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
        ),
        { minLength: 1, maxLength: 3 },
      ),
    });
    let slowest = 0;
    let agreed = 0;
    fc.assert(
      fc.property(mutation, ({ base, edits }) => {
        const [original, key] = bases[base];
        let der = Buffer.from(original);
        for (const edit of edits) {
          const at = edit.at % Math.max(der.length, 1);
          if (edit.kind === 'set' && der.length > 0) der[at] = edit.byte;
          else if (edit.kind === 'insert') der = Buffer.concat([der.subarray(0, at), edit.bytes, der.subarray(at)]);
          else if (edit.kind === 'delete') der = Buffer.concat([der.subarray(0, at), der.subarray(at + edit.count)]);
          else if (edit.kind === 'truncate') der = der.subarray(0, at);
        }
        const bundle = { certificatePem: pemOf(der), privateKeyPem: keyPem(key) };
        const started = performance.now();
        const fastResult = outcome(() => parseCertificateBundle(bundle, 'x', { checkKey: false }));
        slowest = Math.max(slowest, performance.now() - started);
        if (!fastResult.ok) {
          assert.ok(fastResult.error instanceof InvalidCertificateError, `not an InvalidCertificateError: ${String(fastResult.error)}`);
          return;
        }
        const checked = outcome(() => parseCertificateBundle(bundle, 'x'));
        if (!checked.ok) return; // the fast path reads less than OpenSSL (e.g. a broken public key); buildSecureContext refuses those
        agreed++;
        const { issuer: fastIssuer, ...fastRest } = fastResult.meta;
        const { issuer: checkedIssuer, ...checkedRest } = checked.meta;
        assert.deepEqual(fastRest, checkedRest);
        if (fastIssuer !== checkedIssuer) assert.match(fastIssuer, FALLBACK, `issuer ${fastIssuer} vs OpenSSL ${checkedIssuer}`);
      }),
      { numRuns: 3000 },
    );
    console.log(`# slowest parse of a mutated certificate: ${slowest.toFixed(1)} ms (a claim of speed belongs to bench/, not here)`);
    assert.ok(agreed > 100, `only ${agreed} mutants parsed in both modes`);
  });

  it('random bytes throw only InvalidCertificateError (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          fastDer(bytes);
        } catch (error) {
          return error instanceof InvalidCertificateError;
        }
        return false; // random bytes are never a certificate
      }),
      { numRuns: 1000 },
    );
  });
});

describe('checkKey: false and the private key', () => {
  it('accepts a mismatched key; buildSecureContext then refuses it, while checkKey: true refuses it at parse', () => {
    const der = forgeLeaf(ca, { publicKey: createPublicKey(ecKey), altNames: [{ type: 2, value: 'k.example' }] });
    const good = bundleOf(der, ecKey, ca.pem);
    // Same type, other key: OpenSSL's own check. Another type (OpenSSL would load it into another
    // slot and fail every handshake): buildSecureContext compares the key type. PKCS#8 and traditional PEM.
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const cases: Array<[string, RegExp]> = [
      [keyPem(otherEc), /key values mismatch/],
      [keyPem(otherEc, 'pkcs8'), /key values mismatch/],
      [keyPem(rsaKey()), /private key \(RSA\) does not match the certificate \(EC\)/],
      [keyPem(rsaKey(), 'pkcs8'), /private key \(RSA\) does not match the certificate \(EC\)/],
      [keyPem(ed25519Key), /private key \(Ed25519\) does not match the certificate \(EC\)/],
    ];
    for (const [privateKeyPem, reason] of cases) {
      const bundle = { ...good, privateKeyPem };
      const meta = parseCertificateBundle(bundle, 'x', { checkKey: false });
      assert.deepEqual(meta, parseCertificateBundle(good, 'x'));
      assert.throws(() => buildSecureContext(bundle), (error: unknown) => error instanceof InvalidCertificateError && reason.test(error.message));
      assert.throws(() => parseCertificateBundle(bundle, 'x'), (error: unknown) => error instanceof InvalidCertificateError && /does not match/.test(error.message));
      assert.throws(() => parseCertificateBundle(bundle, 'x', { checkKey: true }), InvalidCertificateError);
    }
    // An RSA leaf with an EC key, the other way round.
    const rsaLeaf = bundleOf(forgeLeaf(ca), ecKey, ca.pem);
    parseCertificateBundle(rsaLeaf, 'x', { checkKey: false });
    assert.throws(() => buildSecureContext(rsaLeaf), /private key \(EC\) does not match the certificate \(RSA\)/);
    for (const [der, key] of [[forgeLeaf(ca), rsaKey()], [forgeLeaf(ca, { publicKey: createPublicKey(ed25519Key) }), ed25519Key]] as const) {
      buildSecureContext(bundleOf(der, key, ca.pem));
      buildSecureContext({ certificatePem: pemOf(der), privateKeyPem: keyPem(key, 'pkcs8') });
    }
    // Not a key at all: the fast parse does not look; OpenSSL refuses it when the context is built.
    const garbage = { ...good, privateKeyPem: 'not a key' };
    parseCertificateBundle(garbage, 'x', { checkKey: false });
    assert.throws(() => buildSecureContext(garbage), InvalidCertificateError);
    buildSecureContext(good);
  });

  it('parseStoredCertificate passes checkKey through (default: checked)', () => {
    const der = forgeLeaf(ca, { altNames: [{ type: 2, value: 'unit.example' }] });
    const bundle = bundleOf(der, rsaKey(), ca.pem);
    const meta = parseCertificateBundle(bundle, 'local-ca:default');
    const raw = serializeStoredCertificate(bundle, meta, 1);
    assert.deepEqual(parseStoredCertificate('certificates/unit.example', raw, { checkKey: false }), parseStoredCertificate('certificates/unit.example', raw));
    assert.deepEqual(parseStoredCertificate('certificates/unit.example', raw, { checkKey: false }).meta, meta);

    const mismatched = serializeStoredCertificate({ ...bundle, privateKeyPem: keyPem(ecKey) }, meta, 1);
    assert.throws(() => parseStoredCertificate('k', mismatched), CorruptStorageError);
    assert.throws(() => parseStoredCertificate('k', mismatched, { checkKey: true }), CorruptStorageError);
    assert.deepEqual(parseStoredCertificate('k', mismatched, { checkKey: false }).meta, meta);

    const corrupt = serializeStoredCertificate({ ...bundle, certificatePem: pemOf(der.subarray(0, 100)) }, meta, 1);
    assert.throws(() => parseStoredCertificate('k', corrupt, { checkKey: false }), CorruptStorageError);
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { ACME_IDENTIFIER_OID, buildTlsAlpn01Certificate } from '../src/adapters/challenges/tls-alpn-01-cert.js';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import {
  ariCertId,
  buildSecureContext,
  certificateCoversName,
  parseCertificateBundle,
  splitPemChain,
} from '../src/certs.js';
import { ipAddressBytes } from '../src/ip.js';
import { InvalidCertificateError } from '../src/errors.js';
import type { CertificateBundle } from '../src/types.js';

/** The worked example of RFC 9773 §4.1 (AKI keyid 69:88:5B:…, serial 0x87654321). */
const RFC9773_EXAMPLE_ID = 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE';
const RFC9773_EXAMPLE_KEY_ID = '69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4';

const OPENSSL_CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Test EC CA
[ca_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign
subjectKeyIdentifier = ${RFC9773_EXAMPLE_KEY_ID}
[leaf_ext]
basicConstraints = CA:false
subjectAltName = DNS:EC.example.com,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1
authorityKeyIdentifier = keyid:always
[no_aki_ext]
subjectAltName = DNS:noaki.example.com
authorityKeyIdentifier = none
subjectKeyIdentifier = none
`;

let dir: string;
const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: 'pipe' });
const read = (file: string) => readFileSync(join(dir, file), 'utf8');

/** An ECDSA P-256 leaf signed by an ECDSA CA whose key id is the RFC 9773 example's. */
function opensslLeaf(file: string, serial: string, extensions: string): CertificateBundle {
  openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', serial,
    '-days', '10', '-extfile', 'openssl.cnf', '-extensions', extensions, '-out', file);
  return { certificatePem: read(file) + read('ca.pem'), privateKeyPem: read('leaf.key') };
}

/** ARI id computed from openssl's own text output, independently of the code under test. */
function ariIdFromOpenssl(file: string): string {
  const serialHex = openssl('x509', '-in', file, '-noout', '-serial').trim().replace(/^serial=/, '');
  const akiText = openssl('x509', '-in', file, '-noout', '-ext', 'authorityKeyIdentifier');
  const keyIdHex = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(akiText)![1].replaceAll(':', '');
  // DER INTEGER content: a 0x00 sign byte in front of a high first bit.
  const evenSerial = serialHex.length % 2 ? `0${serialHex}` : serialHex;
  const derSerial = parseInt(evenSerial.slice(0, 2), 16) >= 0x80 ? `00${evenSerial}` : evenSerial;
  const b64 = (hex: string) => Buffer.from(hex, 'hex').toString('base64url');
  return `${b64(keyIdHex)}.${b64(derSerial)}`;
}

function issueContext() {
  return { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: memoryStorage(), now: Date.now };
}

function assertInvalid(fn: () => unknown, secret?: string): InvalidCertificateError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof InvalidCertificateError, `expected InvalidCertificateError, got ${String(error)}`);
    if (secret !== undefined) assertNoKeyText(error, secret);
    return error;
  }
  assert.fail('expected InvalidCertificateError, nothing was thrown');
}

/** Neither the message nor anything in the cause chain quotes the key. */
function assertNoKeyText(error: unknown, keyPem: string): void {
  const body = keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const text = `${e.message} ${e.stack ?? ''}`;
    assert.ok(!text.includes('PRIVATE KEY'), 'error mentions the PEM');
    for (let i = 0; i + 24 <= body.length; i += 24) assert.ok(!text.includes(body.slice(i, i + 24)), 'error quotes key material');
  }
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'certstate-certs-'));
  writeFileSync(join(dir, 'openssl.cnf'), OPENSSL_CONFIG);
  openssl('req', '-x509', '-config', 'openssl.cnf', '-extensions', 'ca_ext', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30');
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'leaf.key');
  openssl('req', '-new', '-config', 'openssl.cnf', '-key', 'leaf.key', '-subj', '/CN=ec.example.com', '-out', 'leaf.csr');
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('parseCertificateBundle', () => {
  it('parses an ECDSA leaf made by openssl (which node-forge cannot parse)', () => {
    const bundle = opensslLeaf('ec.pem', '0x87654321', 'leaf_ext');
    const meta = parseCertificateBundle(bundle, 'test');
    const x509 = new X509Certificate(read('ec.pem'));
    assert.deepEqual(meta.names, ['ec.example.com', '127.0.0.1', '::1']);
    assert.equal(meta.serial, '87654321');
    assert.equal(meta.fingerprint, x509.fingerprint256);
    assert.equal(meta.notBefore, new Date(x509.validFrom).getTime());
    assert.equal(meta.notAfter, new Date(x509.validTo).getTime());
    assert.equal(meta.notAfter - meta.notBefore, 10 * 86_400_000);
    assert.equal(meta.issuer, 'CN=Test EC CA');
    assert.equal(meta.issuerId, 'test');
    assert.equal(meta.ariCertId, RFC9773_EXAMPLE_ID);
    // The same key in its traditional (SEC1) form takes the typed-DER fast path.
    const sec1 = createPrivateKey(bundle.privateKeyPem).export({ type: 'sec1', format: 'pem' }) as string;
    assert.deepEqual(parseCertificateBundle({ ...bundle, privateKeyPem: sec1 }, 'test'), meta);
  });

  it('parses a local-CA leaf (RSA), ariCertId agreeing with openssl', async () => {
    const bundle = await localCaIssuer().issue({ names: ['localhost', '127.0.0.1', '*.dev.test'] }, issueContext());
    const meta = parseCertificateBundle(bundle, 'local-ca:default');
    assert.deepEqual(meta.names, ['localhost', '*.dev.test', '127.0.0.1']);
    const leafPem = splitPemChain(bundle.certificatePem)[0];
    writeFileSync(join(dir, 'local.pem'), leafPem);
    assert.equal(meta.serial, openssl('x509', '-in', 'local.pem', '-noout', '-serial').trim().replace(/^serial=/, ''));
    assert.equal(meta.ariCertId, ariIdFromOpenssl('local.pem'));
    assert.equal(meta.issuer, 'CN=certstate local CA');
  });

  it('rejects a key that does not match the leaf, without quoting the key', () => {
    const bundle = opensslLeaf('ec2.pem', '0x01', 'leaf_ext');
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    for (const key of [otherEc, otherRsa]) {
      const error = assertInvalid(() => parseCertificateBundle({ ...bundle, privateKeyPem: key }, 'test'), key);
      assert.match(error.message, /does not match/);
    }
  });

  it('rejects garbage, truncated and missing PEM with InvalidCertificateError only', () => {
    const bundle = opensslLeaf('ec3.pem', '0x02', 'leaf_ext');
    const leaf = read('ec3.pem');
    const lines = leaf.trimEnd().split('\n');
    const certificates = [
      '',
      'garbage',
      '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
      '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n',
      leaf.slice(0, leaf.length / 2), // cut before END: no certificate at all
      [...lines.slice(0, 4), lines[lines.length - 1]].join('\n'), // body truncated, END kept
      bundle.privateKeyPem, // a key where the certificate belongs
    ];
    for (const certificatePem of certificates) {
      assertInvalid(() => parseCertificateBundle({ certificatePem, privateKeyPem: bundle.privateKeyPem }, 'x'), bundle.privateKeyPem);
    }
    const keyBody = bundle.privateKeyPem.split('\n');
    const sec1 = createPrivateKey(bundle.privateKeyPem).export({ type: 'sec1', format: 'pem' }) as string;
    const keys = [
      '',
      'not a key',
      keyBody.slice(0, 2).join('\n') + '\n-----END PRIVATE KEY-----\n',
      sec1.replace(/\n[A-Za-z0-9+/]{16}/, '\n'), // traditional, body damaged
      sec1.replace('EC PRIVATE KEY-----\n', 'EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n'),
      leaf,
    ];
    for (const privateKeyPem of keys) {
      assertInvalid(() => parseCertificateBundle({ certificatePem: bundle.certificatePem, privateKeyPem }, 'x'), privateKeyPem);
    }
    assertInvalid(() => parseCertificateBundle({ certificatePem: 42, privateKeyPem: null } as never, 'x'));
  });

  it('never throws anything but InvalidCertificateError on corrupted PEM (fuzz)', () => {
    const bundle = opensslLeaf('ec4.pem', '0x03', 'leaf_ext');
    const pem = bundle.certificatePem;
    fc.assert(
      fc.property(fc.nat(pem.length - 1), fc.string({ maxLength: 8 }), fc.nat(40), (at, insert, cut) => {
        const certificatePem = pem.slice(0, at) + insert + pem.slice(Math.min(pem.length, at + cut));
        try {
          parseCertificateBundle({ certificatePem, privateKeyPem: bundle.privateKeyPem }, 'x');
        } catch (error) {
          return error instanceof InvalidCertificateError;
        }
        return true;
      }),
      { numRuns: 300 },
    );
  });
});

describe('ariCertId', () => {
  it('matches the RFC 9773 example and openssl, with and without a high serial bit', () => {
    opensslLeaf('rfc.pem', '0x87654321', 'leaf_ext');
    opensslLeaf('high.pem', '0xFF00112233445566778899AABBCCDDEE', 'leaf_ext');
    opensslLeaf('low.pem', '0x7F00112233445566778899AABBCCDDEE', 'leaf_ext');
    assert.equal(ariCertId(new X509Certificate(read('rfc.pem'))), RFC9773_EXAMPLE_ID);
    const high = new X509Certificate(read('high.pem'));
    assert.equal(ariCertId(high), ariIdFromOpenssl('high.pem'));
    assert.match(ariCertId(high)!, /\.AP8AESIzRFVmd4iZqrvM3e4$/); // leading 0x00 kept
    assert.equal(ariCertId(high.raw), ariCertId(high)); // DER input too
    assert.equal(ariCertId(new X509Certificate(read('low.pem'))), ariIdFromOpenssl('low.pem'));
  });

  it('is undefined without an AKI', () => {
    const bundle = opensslLeaf('noaki.pem', '0x7F', 'no_aki_ext');
    assert.equal(ariCertId(new X509Certificate(read('noaki.pem'))), undefined);
    assert.equal('ariCertId' in parseCertificateBundle(bundle, 'x'), false);
  });

  it('throws only InvalidCertificateError on malformed DER (fuzz)', () => {
    opensslLeaf('fuzz.pem', '0x87654321', 'leaf_ext');
    const der = new X509Certificate(read('fuzz.pem')).raw;
    const mutated = fc.tuple(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(der.length)).map(([at, byte, length]) => {
      const copy = Buffer.from(der);
      copy[at] = byte;
      return copy.subarray(0, length);
    });
    fc.assert(
      fc.property(fc.oneof(mutated, fc.uint8Array({ maxLength: 64 })), (bytes) => {
        try {
          const id = ariCertId(bytes);
          return id === undefined || /^[\w-]+\.[\w-]+$/.test(id);
        } catch (error) {
          return error instanceof InvalidCertificateError;
        }
      }),
      { numRuns: 2000 },
    );
    // Every truncation is detected, even one that only cuts the signature the walker never reads.
    for (let length = 0; length < der.length; length++) assertInvalid(() => ariCertId(der.subarray(0, length)));
    // Hand-made traps: 4-byte length overrunning, indefinite length, high tag number.
    for (const bytes of [[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], [0x30, 0x80, 0, 0], [0x3f, 0x01, 0x00], [0x30, 0x02, 0x30, 0x05]]) {
      assertInvalid(() => ariCertId(Uint8Array.from(bytes)));
    }
  });
});

describe('splitPemChain', () => {
  it('splits a chain in order, normalising CRLF and ignoring keys and text', () => {
    opensslLeaf('chain.pem', '0x04', 'leaf_ext');
    const [leaf, ca] = [read('chain.pem'), read('ca.pem')];
    const messy = `subject=foo\r\n${leaf.replaceAll('\n', '\r\n')}junk\n${read('leaf.key')}${ca}`;
    assert.deepEqual(splitPemChain(messy), [leaf, ca]);
    assert.deepEqual(splitPemChain('-----BEGIN CERTIFICATE-----\nAAAA\n'), []);
  });
});

describe('certificateCoversName', () => {
  const meta = { names: ['example.com', '*.example.com', 'Upper.Example.org', '127.0.0.1', '::1', '*.0.0.1'] };
  const cases: Array<[string, boolean]> = [
    ['example.com', true],
    ['EXAMPLE.com.', true],
    ['a.example.com', true],
    ['*.example.com', true],
    ['a.b.example.com', false],
    ['.example.com', false],
    ['xexample.com', false],
    ['*.a.example.com', false],
    ['a*.example.com', false],
    ['upper.example.org', true],
    ['a.upper.example.org', false],
    ['127.0.0.1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['10.0.0.1', false], // a wildcard never matches an IP literal
    ['example.net', false],
    ['', false],
  ];
  for (const [name, expected] of cases) {
    it(`${expected ? 'covers' : 'does not cover'} ${JSON.stringify(name)}`, () => {
      assert.equal(certificateCoversName(meta, name), expected);
    });
  }
  it('does not let a wildcard cover its bare domain', () => {
    assert.equal(certificateCoversName({ names: ['*.example.com'] }, 'example.com'), false);
  });
});

describe('ipAddressBytes', () => {
  it('encodes IPv4, IPv6 (compressed, mapped) and refuses the rest', () => {
    assert.equal(ipAddressBytes('10.1.2.3')!.toString('hex'), '0a010203');
    assert.equal(ipAddressBytes('::1')!.toString('hex'), '0'.repeat(31) + '1');
    assert.equal(ipAddressBytes('2001:db8::1:0')!.toString('hex'), '20010db8000000000000000000010000');
    assert.equal(ipAddressBytes('::ffff:1.2.3.4')!.toString('hex'), '00000000000000000000ffff01020304');
    assert.equal(ipAddressBytes('fe80::1%eth0'), undefined);
    assert.equal(ipAddressBytes('example.com'), undefined);
  });
});

describe('buildSecureContext', () => {
  it('builds a context for a matching pair and refuses a mismatch without quoting the key', () => {
    const bundle = opensslLeaf('ctx.pem', '0x05', 'leaf_ext');
    assert.ok(buildSecureContext(bundle).context);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    assertInvalid(() => buildSecureContext({ ...bundle, privateKeyPem: other }), other);
  });
});

describe('buildTlsAlpn01Certificate', () => {
  const keyAuthorization = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI';

  it('is self-signed, names only the identifier, and carries the critical acmeIdentifier digest', () => {
    const bundle = buildTlsAlpn01Certificate('alpn.example.com', keyAuthorization);
    const x509 = new X509Certificate(bundle.certificatePem);
    assert.equal(x509.subjectAltName, 'DNS:alpn.example.com');
    assert.ok(x509.verify(x509.publicKey), 'self-signed');
    assert.ok(x509.checkPrivateKey(createPrivateKey(bundle.privateKeyPem)));

    // Independent check of the encoding with openssl's DER dump.
    writeFileSync(join(dir, 'alpn.pem'), bundle.certificatePem);
    const dump = openssl('asn1parse', '-in', 'alpn.pem').split('\n');
    const at = dump.findIndex((line) => line.includes(`OBJECT            :${ACME_IDENTIFIER_OID}`));
    assert.ok(at >= 0, 'acmeIdentifier extension present');
    assert.match(dump[at + 1], /BOOLEAN\s+:255/, 'critical');
    const digest = createHash('sha256').update(keyAuthorization).digest('hex').toUpperCase();
    assert.match(dump[at + 2], new RegExp(`OCTET STRING\\s+\\[HEX DUMP\\]:0420${digest}$`));
  });

  it('uses an iPAddress SAN for an IP identifier (RFC 8738) and refuses wildcards', () => {
    const x509 = new X509Certificate(buildTlsAlpn01Certificate('::1', keyAuthorization).certificatePem);
    assert.equal(x509.subjectAltName, 'IP Address:0:0:0:0:0:0:0:1');
    assert.throws(() => buildTlsAlpn01Certificate('*.example.com', keyAuthorization), /invalid identifier/);
    assert.throws(() => buildTlsAlpn01Certificate('a.example.com', ''), /empty key authorization/);
  });
});


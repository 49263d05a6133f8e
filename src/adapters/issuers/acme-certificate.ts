/**
 * Certificate-side helpers of the ACME issuer: leaf keys, the CSR, choosing a
 * chain among the CA's alternates, and checking what the CA sent back.
 * Parsing uses node:crypto's `X509Certificate` (node-forge cannot read ECDSA).
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair, sign, type KeyObject } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';
import { certificateCoversName } from '../../certs/coverage.js';
import { readCertificateFields } from '../../certs/fields.js';
import { InvalidCertificateError } from '../../errors.js';
import { ipAddressBytes } from '../../ip.js';
import { derToPem, pemToDer, splitPemChain } from '../../pem.js';

const generateKeyPairP = promisify(generateKeyPair);

/** Leaf key algorithms the issuer can request. */
export type AcmeKeyType = 'P-256' | 'P-384' | 'RSA-2048' | 'RSA-4096';

/** All supported key types, for validation. */
export const KEY_TYPES: readonly AcmeKeyType[] = ['P-256', 'P-384', 'RSA-2048', 'RSA-4096'];

/**
 * A fresh leaf key: the parsed key, for the CSR's signature and the check of
 * what the CA returns, and its PKCS#8 PEM, for storage and the TLS context.
 * Kept parsed because OpenSSL 3 takes ~1 ms to decode a private key (PEM or
 * DER alike), and an on-demand handshake waits for every such millisecond.
 */
export interface LeafKey {
  key: KeyObject;
  pem: string;
}

/** A fresh leaf key pair (see `LeafKey`). */
export async function generateLeafKey(type: AcmeKeyType): Promise<LeafKey> {
  const pair =
    type === 'P-256' ? await generateKeyPairP('ec', { namedCurve: 'prime256v1' })
    : type === 'P-384' ? await generateKeyPairP('ec', { namedCurve: 'secp384r1' })
    : await generateKeyPairP('rsa', { modulusLength: type === 'RSA-4096' ? 4096 : 2048 });
  return { key: pair.privateKey, pem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** A private key as a `KeyObject`: parsed only when given as PEM. */
function privateKeyOf(key: KeyObject | string): KeyObject {
  return typeof key === 'string' ? createPrivateKey(key) : key;
}

// ─── The CSR (PKCS#10, RFC 2986), encoded here ─────────────────────────────
//
// acme-client's `createCsr` goes through @peculiar/x509 + WebCrypto: ~20 ms per
// CSR, ~120 ms for the first one in a process (module start-up), all while an
// on-demand handshake waits. A CSR is a few fixed DER structures, so we
// encode it directly and sign with node:crypto (< 1 ms).

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

function derOid(oid: string): Buffer {
  const arcs = oid.split('.').map(Number);
  const bytes = [arcs[0]! * 40 + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) chunk.unshift((n & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return der(0x06, Buffer.from(bytes));
}

const SEQUENCE = 0x30;
const SET = 0x31;

/** Signature algorithm (and its hash) for a leaf key. */
function signatureAlgorithm(key: KeyObject): { hash: string; identifier: Buffer } {
  if (key.asymmetricKeyType === 'rsa') return { hash: 'sha256', identifier: der(SEQUENCE, derOid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00])) };
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'secp384r1') return { hash: 'sha384', identifier: der(SEQUENCE, derOid('1.2.840.10045.4.3.3')) };
    if (curve === 'prime256v1') return { hash: 'sha256', identifier: der(SEQUENCE, derOid('1.2.840.10045.4.3.2')) };
  }
  throw new TypeError(`unsupported leaf key type ${key.asymmetricKeyType}`);
}

/** SAN GeneralName: dNSName [2] or iPAddress [7] (RFC 8738). */
function generalName(name: string): Buffer {
  const ip = ipAddressBytes(name);
  return ip ? der(0x87, ip) : der(0x82, Buffer.from(name, 'ascii'));
}

/**
 * A CSR for exactly `names` (the order's identifiers), so the CA cannot
 * refuse it for a mismatch. The primary name becomes the CN when it fits
 * (64 characters, not an IP); the SAN carries them all. PEM.
 */
export function createCsrPem(primary: string, names: string[], privateKey: KeyObject | string): string {
  const key = privateKeyOf(privateKey);
  const commonName = primary.length <= 64 && net.isIP(primary) === 0 && names.includes(primary) ? primary : undefined;
  const subject = commonName
    ? der(SEQUENCE, der(SET, der(SEQUENCE, derOid('2.5.4.3'), der(0x0c, Buffer.from(commonName, 'utf8')))))
    : der(SEQUENCE);
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const san = der(SEQUENCE, derOid('2.5.29.17'), der(0x04, der(SEQUENCE, ...names.map(generalName))));
  // attributes [0] IMPLICIT SET OF Attribute: one extensionRequest holding the SAN.
  const attributes = der(0xa0, der(SEQUENCE, derOid('1.2.840.113549.1.9.14'), der(SET, der(SEQUENCE, san))));
  const info = der(SEQUENCE, der(0x02, Buffer.from([0])), subject, spki, attributes);
  const { hash, identifier } = signatureAlgorithm(key);
  const signature = sign(hash, info, key); // ECDSA: DER-encoded, as X.509 wants
  return derToPem(der(SEQUENCE, info, identifier, der(0x03, Buffer.from([0]), signature)), 'CERTIFICATE REQUEST');
}

/** The base64url DER of a PEM object, as ACME's finalize wants the CSR. */
export function pemToBase64Url(pem: string): string {
  return pemToDer(pem).toString('base64url');
}

function commonNameOf(distinguishedName: string): string | undefined {
  return distinguishedName
    .split('\n')
    .map((line) => /^CN=(.*)$/.exec(line.trim())?.[1])
    .find((cn) => cn !== undefined);
}

/**
 * The chain to serve when the CA offers alternates: the first whose topmost
 * certificate is issued by `preferred` (a root's common name, as Let's
 * Encrypt's and certbot's `preferred-chain` mean it), else the first with any
 * certificate issued by `preferred`, else the CA's default (`chains[0]`).
 */
export function choosePreferredChain(chains: string[], preferred: string): string {
  const issuersOf = (chain: string) => splitPemChain(chain).map((pem) => commonNameOf(new X509Certificate(pem).issuer));
  const parsed = chains.map((chain) => {
    try {
      return issuersOf(chain);
    } catch {
      return [];
    }
  });
  const top = parsed.findIndex((issuers) => issuers.length > 0 && issuers[issuers.length - 1] === preferred);
  if (top >= 0) return chains[top]!;
  const any = parsed.findIndex((issuers) => issuers.includes(preferred));
  return chains[any >= 0 ? any : 0]!;
}

/**
 * Refuse what the CA sent unless the leaf matches our key and covers every
 * requested name: a wrong certificate must fail the attempt, not reach a
 * handshake.
 */
export function verifyIssued(chainPem: string, privateKey: KeyObject | string, names: string[]): void {
  const pems = splitPemChain(chainPem);
  if (pems.length === 0) throw new InvalidCertificateError('the CA returned no PEM certificate');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(pems[0]!);
  } catch (error) {
    throw new InvalidCertificateError('the CA returned an unparsable certificate', error);
  }
  if (!leaf.checkPrivateKey(privateKeyOf(privateKey))) throw new InvalidCertificateError('the issued certificate does not match our private key');
  // The SAN's parsed values (IP addresses canonical), not OpenSSL's text: it prints ::1 as 0:0:0:0:0:0:0:1.
  const { dnsNames, ipAddresses } = readCertificateFields(leaf.raw);
  const san = { names: [...dnsNames, ...ipAddresses] };
  const missing = names.filter((name) => !certificateCoversName(san, name));
  if (missing.length) throw new InvalidCertificateError(`the issued certificate does not cover ${missing.join(', ')}`);
}

/** URLs of `rel="alternate"` links (RFC 8555 §7.4.2), from a (possibly joined) `Link` header. */
export function alternateLinks(linkHeader: string | undefined, base: string): string[] {
  if (!linkHeader) return [];
  const out: string[] = [];
  for (const match of linkHeader.matchAll(/<([^>]*)>\s*((?:;\s*[^;,]*)*)/g)) {
    if (/;\s*rel\s*=\s*"?alternate"?/i.test(match[2] ?? '')) {
      try {
        out.push(new URL(match[1]!, base).toString());
      } catch {
        // ignore a malformed link
      }
    }
  }
  return out;
}

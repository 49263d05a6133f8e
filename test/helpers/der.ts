/**
 * DER and certificate builders for tests that take certificates apart: a
 * minimal TLV writer/reader, TBS surgery, and leaves assembled by node-forge
 * (any key type, any issuer name) and signed by the shared test CA.
 */
import { createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { keys } from '../../src/storage-keys.js';
import type { CertificateBundle, Storage } from '../../src/types.js';
import { installTestCa, testLeafKey } from './scripted-issuer.js';

export type Bytes = Uint8Array | readonly number[];

export function tlv(tag: number, ...content: Bytes[]): Buffer {
  const body = Buffer.concat(content.map((part) => Buffer.from(part)));
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}

export function oidDer(dotted: string): Buffer {
  const [first, second, ...rest] = dotted.split('.').map(BigInt);
  const bytes: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) {
    const chunk = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, bytes);
}

export interface Tlv {
  tag: number;
  /** Whole element: der[pos, end); content from `start`. */
  pos: number;
  start: number;
  end: number;
}

export function readTlv(der: Buffer, pos: number): Tlv {
  let length = der[pos + 1];
  let start = pos + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i];
    start += octets;
  }
  return { tag: der[pos], pos, start, end: start + length };
}

export function childrenOf(der: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = parent.start; pos < parent.end; pos = out[out.length - 1].end) out.push(readTlv(der, pos));
  return out;
}

/** The TBSCertificate's elements (version first), each as its DER. */
export function tbsItems(certificate: Buffer): Buffer[] {
  const tbs = childrenOf(certificate, readTlv(certificate, 0))[0];
  return childrenOf(certificate, tbs).map((item) => certificate.subarray(item.pos, item.end));
}

export const SHA256_WITH_RSA = tlv(0x30, oidDer('1.2.840.113549.1.1.11'), [0x05, 0x00]);

/** A certificate from TBS items, signed by `caKey` (or with a dummy signature: OpenSSL does not verify it when parsing). */
export function certificateOf(items: Buffer[], caKey?: KeyObject): Buffer {
  const tbs = tlv(0x30, ...items);
  const signature = caKey === undefined ? Buffer.alloc(256, 0x5a) : sign('sha256', tbs, caKey);
  return tlv(0x30, tbs, SHA256_WITH_RSA, tlv(0x03, [0x00], signature));
}

/** `certificate` with TBS item `index` (0 = version) replaced. */
export function withTbsItem(certificate: Buffer, index: number, item: Buffer): Buffer {
  const items = tbsItems(certificate);
  items[index] = item;
  return certificateOf(items);
}

export function pemOf(der: Uint8Array): string {
  const body = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`;
}


// ─── Test CA and leaves ────────────────────────────────────────────────────

export interface TestCa {
  storage: Storage;
  pem: string;
  key: KeyObject;
  subject: forge.pki.CertificateField[];
  /** Subject key identifier, forge binary string. */
  keyId: string;
}

export async function loadTestCa(): Promise<TestCa> {
  const storage = memoryStorage();
  await installTestCa(storage);
  const { certificatePem, privateKeyPem } = JSON.parse((await storage.load(keys.localCa('default')))!) as CertificateBundle;
  const cert = forge.pki.certificateFromPem(certificatePem);
  const ski = cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string };
  return {
    storage,
    pem: certificatePem,
    key: createPrivateKey(privateKeyPem),
    subject: cert.subject.attributes,
    keyId: forge.util.hexToBytes(ski.subjectKeyIdentifier),
  };
}

export interface LeafOptions {
  issuer?: forge.pki.CertificateField[];
  subject?: forge.pki.CertificateField[];
  serialHex?: string;
  notBefore?: Date;
  notAfter?: Date;
  altNames?: Array<{ type: number; value?: string; ip?: string }>;
  /** Public key of the leaf; default the shared RSA test key's. */
  publicKey?: KeyObject;
  /** Add an AKI (default true). */
  aki?: boolean;
}

export const getTBSCertificate = (forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 })
  .getTBSCertificate;

/** A leaf assembled by node-forge, its SPKI swapped for a non-RSA key where asked, signed by the test CA. */
export function forgeLeaf(ca: TestCa, options: LeafOptions = {}): Buffer {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(createPublicKey(testLeafKey()).export({ type: 'spki', format: 'pem' }) as string);
  cert.serialNumber = options.serialHex ?? '0123456789abcdef';
  cert.validity.notBefore = options.notBefore ?? new Date(Date.UTC(2025, 0, 1, 12, 30, 45));
  cert.validity.notAfter = options.notAfter ?? new Date(Date.UTC(2025, 3, 1, 12, 30, 45));
  cert.setSubject(options.subject ?? [{ shortName: 'CN', value: 'leaf.example' }]);
  cert.setIssuer(options.issuer ?? ca.subject);
  const extensions: unknown[] = [{ name: 'basicConstraints', cA: false }];
  if (options.altNames !== undefined) extensions.push({ name: 'subjectAltName', altNames: options.altNames });
  if (options.aki ?? true) extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: ca.keyId });
  cert.setExtensions(extensions);
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption;
  const tbs = Buffer.from(forge.asn1.toDer(getTBSCertificate(cert)).getBytes(), 'binary');
  const items = tbsItems(tlv(0x30, tbs));
  if (options.publicKey !== undefined) items[6] = options.publicKey.export({ type: 'spki', format: 'der' });
  return certificateOf(items, ca.key);
}


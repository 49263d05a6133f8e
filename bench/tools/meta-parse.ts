/**
 * Cost of reading certificate metadata at start-up: µs per
 * `parseCertificateBundle` call with `checkKey: true` (OpenSSL parses the leaf
 * and the key and compares them) against `checkKey: false` (the leaf's DER
 * alone), over a set of certificates like a store holds: RSA leaves from the
 * local CA (PKCS#1 keys) and ECDSA P-256 leaves (PKCS#8 keys, as the ACME
 * issuer writes them), all signed by one local CA, with the chain.
 *
 * Each run parses every certificate once in each mode (modes alternate, so
 * drift hits both), after ~10 000 warm-up parses in each mode; min / median /
 * max over the runs, and the per-run ratio.
 *
 *   node --import tsx bench/tools/meta-parse.ts [--certs 2000] [--runs 5]
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { pino } from 'pino';
import { installTestCa } from '../../test/helpers/scripted-issuer.js';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { parseCertificateBundle } from '../../src/certs.js';
import { keys } from '../../src/storage-keys.js';
import type { CertificateBundle } from '../../src/types.js';
import { parseFlags } from '../lib/args.js';
import { pairedRatios, summarize, type Summary } from '../lib/stats.js';

const flags = parseFlags('bench/tools/meta-parse.ts', {
  certs: { default: 2000, help: 'certificates (half RSA, half ECDSA)' },
  runs: { default: 5, help: 'runs (min / median / max reported)' },
});

const storage = memoryStorage();
await installTestCa(storage);
const context = { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: Date.now };
const caBundle = JSON.parse((await storage.load(keys.localCa('default')))!) as CertificateBundle;
const caKey = createPrivateKey(caBundle.privateKeyPem);
const caCert = forge.pki.certificateFromPem(caBundle.certificatePem);
const caKeyId = forge.util.hexToBytes((caCert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string }).subjectKeyIdentifier);

// ─── Certificates ──────────────────────────────────────────────────────────

const rsaIssuer = localCaIssuer({ leafKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, leafValidityMs: 90 * 86_400_000 });
const placeholder = forge.pki.publicKeyFromPem(
  createPublicKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey).export({ type: 'spki', format: 'pem' }) as string,
);
const getTBSCertificate = (forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate;

function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), body]);
}

/** Elements inside a DER SEQUENCE that starts at 0 (short or 2-byte lengths, as here). */
function elements(der: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  while (pos < der.length) {
    let length = der[pos + 1];
    let start = pos + 2;
    if (length & 0x80) {
      const octets = length & 0x7f;
      length = 0;
      for (let i = 0; i < octets; i++) length = length * 256 + der[start + i];
      start += octets;
    }
    out.push(der.subarray(pos, start + length));
    pos = start + length;
  }
  return out;
}

/** An ECDSA leaf signed by the local CA: forge assembles it around an RSA placeholder, whose SPKI is then swapped. */
function ecLeaf(name: string, key: KeyObject): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = placeholder;
  cert.serialNumber = `01${forge.util.bytesToHex(forge.random.getBytesSync(15))}`;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 90 * 86_400_000);
  cert.setSubject([{ shortName: 'CN', value: name }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: name }] },
    { name: 'authorityKeyIdentifier', keyIdentifier: caKeyId },
  ]);
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption;
  const items = elements(Buffer.from(forge.asn1.toDer(getTBSCertificate(cert)).getBytes(), 'binary'));
  items[6] = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const tbs = tlv(0x30, ...items);
  const algorithm = Buffer.from('300d06092a864886f70d01010b0500', 'hex');
  const der = tlv(0x30, tbs, algorithm, tlv(0x03, Buffer.from([0]), sign('sha256', tbs, caKey)));
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;
}

const bundles: Array<{ kind: 'rsa' | 'ec'; bundle: CertificateBundle }> = [];
for (let i = 0; i < flags.certs; i++) {
  const name = `m${i}.meta.test`;
  if (i % 2 === 0) {
    bundles.push({ kind: 'rsa', bundle: await rsaIssuer.issue({ names: [name] }, context) });
  } else {
    const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const certificatePem = ecLeaf(name, key) + caBundle.certificatePem;
    bundles.push({ kind: 'ec', bundle: { certificatePem, privateKeyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string } });
  }
}
// Both modes agree on every certificate (what the tests check in depth).
for (const { bundle } of bundles) {
  const checked = JSON.stringify(parseCertificateBundle(bundle, 'bench'));
  if (JSON.stringify(parseCertificateBundle(bundle, 'bench', { checkKey: false })) !== checked) throw new Error('modes disagree');
}

// ─── Measurement ───────────────────────────────────────────────────────────

/** µs per parse over `set`, one pass. */
function pass(set: typeof bundles, checkKey: boolean): number {
  const t0 = performance.now();
  for (const { bundle } of set) parseCertificateBundle(bundle, 'bench', { checkKey });
  return ((performance.now() - t0) * 1000) / set.length;
}

const sets = { all: bundles, rsa: bundles.filter((b) => b.kind === 'rsa'), ec: bundles.filter((b) => b.kind === 'ec') };
const fmt = (s: Summary, digits = 1) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
console.log(`${bundles.length} certificates (${sets.rsa.length} RSA-2048 PKCS#1, ${sets.ec.length} ECDSA P-256 PKCS#8), ${flags.runs} runs; µs per parse, median (min–max)`);
for (const [label, set] of Object.entries(sets)) {
  // Warm-up: the DER walker runs ~2× slower until V8 has optimised it (a few thousand calls);
  // a start-up over 100k certificates spends all but the first few ms warm.
  for (let warm = 0; warm < 10_000; warm += set.length) {
    pass(set, true);
    pass(set, false);
  }
  const checked: number[] = [];
  const fast: number[] = [];
  for (let r = 0; r < flags.runs; r++) {
    checked.push(pass(set, true));
    fast.push(pass(set, false));
  }
  console.log(
    `${label.padEnd(4)} checkKey:true ${fmt(summarize(checked))}  checkKey:false ${fmt(summarize(fast))}  ` +
      `ratio ${fmt(pairedRatios(checked, fast))}×  → 100k certificates: ${((summarize(checked).median * 1e5) / 1e6).toFixed(1)} s vs ${((summarize(fast).median * 1e5) / 1e6).toFixed(1)} s`,
  );
}

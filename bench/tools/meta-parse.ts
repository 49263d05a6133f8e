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
import { createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { pino } from 'pino';
import { forgeLeaf, loadTestCa, pemOf } from '../../test/helpers/der.js';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { parseCertificateBundle } from '../../src/certs.js';
import type { CertificateBundle } from '../../src/types.js';
import { parseFlags } from '../lib/args.js';
import { pairedRatios, summarize, type Summary } from '../lib/stats.js';

const flags = parseFlags('bench/tools/meta-parse.ts', {
  certs: { default: 2000, help: 'certificates (half RSA, half ECDSA)' },
  runs: { default: 5, help: 'runs (min / median / max reported)' },
});

const ca = await loadTestCa();
const context = { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: ca.storage, now: Date.now };

// ─── Certificates ──────────────────────────────────────────────────────────

const rsaIssuer = localCaIssuer({ leafKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, leafValidityMs: 90 * 86_400_000 });

/** An ECDSA leaf signed by the local CA (forge assembles it; its SPKI is swapped for the EC key's). */
function ecLeaf(name: string, key: KeyObject): string {
  const der = forgeLeaf(ca, {
    publicKey: createPublicKey(key),
    serialHex: `01${randomBytes(15).toString('hex')}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 90 * 86_400_000),
    subject: [{ shortName: 'CN', value: name }],
    altNames: [{ type: 2, value: name }],
  });
  return pemOf(der);
}

const bundles: Array<{ kind: 'rsa' | 'ec'; bundle: CertificateBundle }> = [];
for (let i = 0; i < flags.certs; i++) {
  const name = `m${i}.meta.test`;
  if (i % 2 === 0) {
    bundles.push({ kind: 'rsa', bundle: await rsaIssuer.issue({ names: [name] }, context) });
  } else {
    const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const certificatePem = ecLeaf(name, key) + ca.pem;
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

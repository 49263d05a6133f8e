/**
 * The engine's own share of an on-demand first handshake, without a CA: an
 * issuer that answers at once with a certificate minted beforehand (one
 * wildcard RSA leaf covering every name: the local CA mints RSA only), so what is left is the engine's path
 * (admission, permission, budget, the actor, storage reads, the lock, the
 * floor's note, the fenced store, the failure record, the chart, the
 * release) and the SecureContext every server builds. The baseline in the
 * same run: the same issuer call and `tls.createSecureContext` of what it
 * returned, the least any on-demand server does. Bench/issue.ts measures the
 * same path against Pebble; this isolates it from the CA's noise.
 *
 *   node --import tsx bench/tools/on-demand-path.ts [--names 300] [--rounds 7] [--cpu-prof]
 */
import { Session } from 'node:inspector/promises';
import { writeFile } from 'node:fs/promises';
import tls from 'node:tls';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import type { CertificateBundle, Issuer } from '../../src/types.js';
import { parseFlags } from '../lib/args.js';
import { engineModule, engineModulePath } from '../lib/engine-module.js';
import { summarize } from '../lib/stats.js';

const flags = parseFlags('bench/tools/on-demand-path.ts', {
  names: { default: 300, help: 'new names per round, one after the other' },
  rounds: { default: 7, help: 'rounds, engine and baseline alternating (median reported)' },
  profile: { default: '', help: 'write a CPU profile of the engine rounds to this file' },
});

const silent = { child: () => silent, info() {}, warn() {}, debug() {}, error() {}, trace() {}, fatal() {} } as never;
const minted = await localCaIssuer({ leafKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey }).issue(
  { names: ['*.od.bench.test'] },
  { signal: new AbortController().signal, logger: silent, storage: memoryStorage(), now: Date.now },
);
// Each answer a certificate of its own (a new fingerprint, as every real issuance has): the minted
// leaf with its serial's last bytes patched (the CA signature no longer verifies; nothing here checks it).
const LEAF = /^-----BEGIN CERTIFICATE-----\n([^-]+)-----END CERTIFICATE-----\n?/;
const leafMatch = LEAF.exec(minted.certificatePem)!;
const leafDer = Buffer.from(leafMatch[1]!.replace(/\s+/g, ''), 'base64');
const chainPem = minted.certificatePem.slice(leafMatch[0].length);
const serial = Buffer.from(new X509Certificate(leafDer).serialNumber.padStart(2, '0'), 'hex');
const serialEnd = leafDer.indexOf(serial) + serial.length;
let issued = 0;
function nextCertificatePem(): string {
  const der = Buffer.from(leafDer);
  der.writeUInt32BE(issued++, serialEnd - 4);
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n${chainPem}`;
}
/** Answers at once (next turn of the event loop), a new certificate each time. */
const instant: Issuer = { id: 'bench:instant', issue: async () => ({ certificatePem: nextCertificatePem(), privateKeyPem: minted.privateKeyPem }) };

const { createCertEngine } = await engineModule();
const engine = createCertEngine({
  storage: memoryStorage(),
  issuers: [instant],
  onDemand: { decide: () => true, rateLimit: { burst: 1_000_000, refillPerSecond: 1000 } },
});
await engine.start();

let seq = 0;
async function engineRound(): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < flags.names; i++) await engine.getCertificate(`n${seq++}.od.bench.test`);
  return ((performance.now() - t0) * 1000) / flags.names;
}

async function baselineRound(): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < flags.names; i++) {
    const bundle: CertificateBundle = await instant.issue({ names: [`b${seq++}.od.bench.test`] }, { signal: new AbortController().signal, logger: silent, storage: memoryStorage(), now: Date.now });
    tls.createSecureContext({ cert: bundle.certificatePem, key: bundle.privateKeyPem });
  }
  return ((performance.now() - t0) * 1000) / flags.names;
}

// Warm-up: JIT, the first actor, the first context.
await engineRound();
await baselineRound();
const session = flags.profile ? new Session() : undefined;
if (session) {
  session.connect();
  await session.post('Profiler.enable');
}
const engineUs: number[] = [];
const baseUs: number[] = [];
for (let r = 0; r < flags.rounds; r++) {
  if (session) await session.post('Profiler.start');
  engineUs.push(await engineRound());
  if (session) {
    const { profile } = await session.post('Profiler.stop');
    if (r === flags.rounds - 1) await writeFile(flags.profile, JSON.stringify(profile));
  }
  baseUs.push(await baselineRound());
}
await engine.stop();
const e = summarize(engineUs);
const b = summarize(baseUs);
console.log(`engine ${engineModulePath()}`);
console.log(
  `on-demand first getCertificate (instant issuer), ${flags.names} names × ${flags.rounds} rounds: engine ${e.median.toFixed(0)} µs (${e.min.toFixed(0)}–${e.max.toFixed(0)}), ` +
    `issuer + createSecureContext ${b.median.toFixed(0)} µs (${b.min.toFixed(0)}–${b.max.toFixed(0)}); the engine adds ${(e.median - b.median).toFixed(0)} µs a name`,
);

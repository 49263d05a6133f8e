// @ts-nocheck -- needs bench/tmp/exp/certs-fast.ts from ./apply.sh (a private, gitignored copy); kept out of the shared typecheck
// The recommended start-up, simulated on the real file storage: list names, serve
// any name on demand (read + fast meta + SecureContext), scan the rest in the
// background with bounded concurrency, keep only metadata per name.
import tls from 'node:tls';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { keys } from '../../src/storage-keys.js';
import { ensureDataset, fileStorageDir } from '../lib/dataset.js';
import { memoryAfterGc } from '../lib/memory.js';
import { parseCertificateMetaFast } from '../tmp/exp/certs-fast.js';

const N = Number(process.argv[2] ?? 100000);
const ds = await ensureDataset(N);
const dir = await fileStorageDir(ds);
try {
  const storage = fileStorage(dir.dir);
  const m0 = memoryAfterGc();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  // 1. the index of names: one directory listing.
  const listed = (await storage.list(keys.certificatesPrefix)).map((k) => k.slice(keys.certificatesPrefix.length, -'.json'.length));
  const tList = performance.now() - t0;
  const records = new Map<string, { fingerprint?: string; notAfter?: number; renewAt?: number }>();
  for (const name of listed) records.set(name, {});
  // 2. a handshake for any name: load that one unit now, ahead of the scan.
  const contexts = new Map<string, tls.SecureContext>();
  const serve = async (name: string) => {
    const unit = JSON.parse((await storage.load(keys.certificate(name)))!);
    const meta = parseCertificateMetaFast(unit, unit.issuerId);
    Object.assign(records.get(name)!, { fingerprint: meta.fingerprint, notAfter: meta.notAfter });
    contexts.set(name, tls.createSecureContext({ cert: unit.certificatePem, key: unit.privateKeyPem }));
    return performance.now() - t0;
  };
  // 3. the background scan: metadata only (renewal times), 64 reads in flight, PEMs dropped.
  let next = 0;
  const scan = async () => {
    while (next < listed.length) {
      const name = listed[next++]!;
      const rec = records.get(name)!;
      if (rec.fingerprint) continue;
      const unit = JSON.parse((await storage.load(keys.certificate(name)))!);
      const meta = parseCertificateMetaFast(unit, unit.issuerId);
      rec.fingerprint = meta.fingerprint;
      rec.notAfter = meta.notAfter;
      rec.renewAt = meta.notBefore + (meta.notAfter - meta.notBefore) * 2 / 3;
    }
  };
  const scanning = Promise.all(Array.from({ length: 64 }, scan)).then(() => performance.now() - t0);
  const first = await serve(ds.names[0]!);
  const last = await serve(ds.names[N - 1]!);
  const random = await serve(ds.names[Math.floor(N / 2)]!);
  const scanned = await scanning;
  const cpu = process.cpuUsage(cpu0);
  const m1 = memoryAfterGc();
  console.log(JSON.stringify({
    names: N, listMs: Math.round(tList), firstServedMs: Math.round(first), lastServedMs: Math.round(last), middleServedMs: Math.round(random),
    backgroundScanDoneMs: Math.round(scanned), cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    heapPerNameBytes: Math.round(((m1.heapUsedMb - m0.heapUsedMb) * 2 ** 20) / N), rssMb: Math.round(m1.rssMb),
  }));
} finally {
  await dir.dispose();
}

/**
 * The certificate dataset every bench serves: N names `n<i>.bench.test`,
 * each with a real certificate unit (leaf + chain + key, as the engine
 * stores it) from one local CA and one shared leaf key, so thousands mint in
 * seconds (one RSA signature each, no key generation).
 *
 * It is minted once into bench/.cache/dataset/ in the layout of
 * `fileStorage` (`certificates/<name>.json`, 0700 dirs, 0600 files), grows
 * when a bench asks for more names than it holds, and is minted afresh when
 * its leaves get close to their renewal time (a bench must measure serving
 * valid certificates, never a renewal storm).
 *
 * Past the first 100,000 names (`MINT_LIMIT`) the units are patched copies
 * of minted ones (bench/lib/patch-mint.ts: name and serial patched in the
 * leaf's DER, so the CA signature no longer verifies): a million names in a
 * minute instead of an hour of RSA signing. The manifest says where they start.
 *
 * Units carry the certificate's metadata beside it, as the engine stores
 * them since issue 14 (`serializeStoredCertificate`); a dataset minted
 * before is rewritten once with it (`withMeta` in the manifest).
 */
import { generateKeyPairSync } from 'node:crypto';
import { chmod, link, copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { localCaCertificate } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { serializeStoredCertificate } from '../../src/engine/stored.js';
import { keys } from '../../src/storage-keys.js';
import type { Storage } from '../../src/types.js';
import { runWorker } from './children.js';
import { patchMint } from './patch-mint.js';
import { BENCH_DIR } from './paths.js';

/** bench/.cache/dataset, or `CERTSTATE_BENCH_DATASET` (a private dataset: e.g. one minted with a fix of this module). */
export const DATASET_DIR = process.env.CERTSTATE_BENCH_DATASET ? path.resolve(process.env.CERTSTATE_BENCH_DATASET) : path.join(BENCH_DIR, '.cache', 'dataset');
const MANIFEST = path.join(DATASET_DIR, 'manifest.json');
const FORMAT = 1;
const DAY = 86_400_000;
/** Leaves live 90 days; the engine renews at ~2/3 (~57 days), so re-mint well before. */
export const LEAF_VALIDITY_MS = 90 * DAY;
const REMINT_AFTER_MS = 30 * DAY;

interface Manifest {
  format: number;
  count: number;
  /** Oldest leaf's mint time (ms): the whole set is re-minted after REMINT_AFTER_MS. */
  mintedAt: number;
  caId: string;
  issuerId: string;
  /** Names from this index on are patched copies (see patch-mint.ts); absent: every unit was minted. */
  patchedFrom?: number;
  /** Every unit carries its certificate's metadata (absent: minted before it was stored; rewritten once). */
  withMeta?: boolean;
  /** How the patched units were made (`PATCH_FORMAT`); older ones are patched again. */
  patchFormat?: number;
}

/**
 * 2: a patched serial stays minimal DER. Before (absent), a template whose
 * serial has its top bit set gave patched units the engine refuses as
 * malformed (stored without metadata): such a dataset is patched again.
 */
const PATCH_FORMAT = 2;

/** Names minted with a real signature; beyond, patched copies of them. */
export const MINT_LIMIT = 100_000;

export interface Dataset {
  dir: string;
  /** The first `count` names, in order. */
  names: string[];
  /** The CA's certificate (PEM), for clients that verify. */
  caPem: string;
  /** Path of a name's certificate unit inside the dataset. */
  unitPath(name: string): string;
  /** The manifest's mint time (ms): which dataset this is (a cache of it elsewhere, e.g. a PostgreSQL table, is keyed by it). */
  mintedAt: number;
}

export const nameOf = (i: number) => `n${i}.bench.test`;

async function readManifest(): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(MANIFEST, 'utf8')) as Manifest;
    if (m.format !== FORMAT || Date.now() - m.mintedAt > REMINT_AFTER_MS) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/** Make sure the dataset holds at least `count` names; mint what is missing on all cores. */
export async function ensureDataset(count: number, log: (line: string) => void = (l) => console.error(l)): Promise<Dataset> {
  let manifest = await readManifest();
  if (!manifest) {
    await rm(DATASET_DIR, { recursive: true, force: true });
    await mkdir(path.join(DATASET_DIR, 'certificates'), { recursive: true, mode: 0o700 });
    await mkdir(path.join(DATASET_DIR, 'local-ca'), { recursive: true, mode: 0o700 });
    const template = memoryStorage();
    await localCaCertificate(template);
    await writeFile(path.join(DATASET_DIR, keys.localCa('default')), (await template.load(keys.localCa('default')))!, { mode: 0o600 });
    const leafKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    await writeFile(path.join(DATASET_DIR, 'leaf-key.pem'), leafKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
    manifest = { format: FORMAT, count: 0, mintedAt: Date.now(), caId: 'default', issuerId: 'local-ca:default', withMeta: true };
    await writeFile(MANIFEST, JSON.stringify(manifest));
  }
  if (!manifest.withMeta) {
    await addMeta(manifest.count, log);
    manifest.withMeta = true;
    await writeFile(MANIFEST, JSON.stringify(manifest));
  }
  if (manifest.patchedFrom !== undefined && (manifest.patchFormat ?? 1) < PATCH_FORMAT && manifest.count > manifest.patchedFrom) {
    log(`dataset: the patched units from ${manifest.patchedFrom} on are of an older patch format: patching them again`);
    manifest.count = manifest.patchedFrom;
  }
  if (manifest.count < Math.min(count, MINT_LIMIT)) {
    await mint(manifest.count, Math.min(count, MINT_LIMIT), log);
    manifest.count = Math.min(count, MINT_LIMIT);
    await writeFile(MANIFEST, JSON.stringify(manifest));
  }
  if (manifest.count < count) {
    const started = Date.now();
    const from = manifest.count;
    // A minted template for every name length among the patched names (n100000…: the first of each length).
    const templates = new Set<number>();
    for (let first = 10; first < count; first *= 10) if (first >= from) templates.add(first);
    for (const t of templates) await mint(t, t + 1, log);
    log(`dataset: patching ${count - from} certificates from minted ones of the same name length…`);
    const lengthTemplate = new Map<number, string>();
    for (let first = 1; first < count; first *= 10) lengthTemplate.set(nameOf(first).length, nameOf(first === 1 ? 0 : first));
    const ranges: Array<[number, number]> = [];
    let start = from;
    for (const t of [...templates].sort((a, b) => a - b)) {
      if (t > start) ranges.push([start, t]);
      start = t + 1;
    }
    if (start < count) ranges.push([start, count]);
    for (const [a, b] of ranges) await patchMint(DATASET_DIR, a, b, nameOf, (name) => lengthTemplate.get(name.length)!);
    manifest.count = count;
    manifest.patchedFrom = Math.min(manifest.patchedFrom ?? from, from);
    manifest.patchFormat = PATCH_FORMAT;
    await writeFile(MANIFEST, JSON.stringify(manifest));
    log(`dataset: patched ${count - from} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  const caUnit = JSON.parse(await readFile(path.join(DATASET_DIR, keys.localCa('default')), 'utf8')) as { certificatePem: string };
  return {
    dir: DATASET_DIR,
    names: Array.from({ length: count }, (_, i) => nameOf(i)),
    caPem: caUnit.certificatePem,
    unitPath: (name) => path.join(DATASET_DIR, keys.certificate(name)),
    mintedAt: manifest.mintedAt,
  };
}

/** Mint units `from`..`to` (exclusive) on all cores. */
async function mint(from: number, to: number, log: (line: string) => void): Promise<void> {
  const started = Date.now();
  const workers = Math.max(1, Math.min(os.availableParallelism(), 8, to - from));
  const missing = to - from;
  if (missing > 1) log(`dataset: minting ${missing} certificates (from ${from}) on ${workers} threads…`);
  const per = Math.ceil(missing / workers);
  await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const a = from + w * per;
      const b = Math.min(to, a + per);
      if (a >= b) return Promise.resolve();
      // ~3 ms a certificate on one core; a generous bound so a stuck worker still ends.
      return runWorker(new URL('./mint-worker.ts', import.meta.url), { dir: DATASET_DIR, from: a, to: b, validityMs: LEAF_VALIDITY_MS }, 60_000 + (b - a) * 50);
    }),
  );
  if (missing > 1) log(`dataset: minted ${missing} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** Rewrite the first `count` units with their certificate's metadata, as the engine now stores them. */
async function addMeta(count: number, log: (line: string) => void): Promise<void> {
  const started = Date.now();
  log(`dataset: adding the stored metadata to ${count} units…`);
  const batch = 256;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async (_, j) => {
        const file = path.join(DATASET_DIR, keys.certificate(nameOf(i + j)));
        const unit = JSON.parse(await readFile(file, 'utf8')) as { certificatePem: string; privateKeyPem: string; issuerId: string; storedAt: number };
        // A new file renamed over the old: runs hold hard links to the old one (fileStorageDir), which stay as they were.
        await writeFile(`${file}.tmp`, serializeStoredCertificate(unit, unit, unit.storedAt), { mode: 0o600 });
        await rename(`${file}.tmp`, file);
      }),
    );
  }
  log(`dataset: metadata added in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** Copy the first `names` units into `storage` (e.g. a `memoryStorage`), as a previous run would have left them. */
export async function seedStorage(dataset: Dataset, storage: Storage, names = dataset.names): Promise<void> {
  const batch = 256; // bounded concurrency: enough to keep the disk busy, not 100k open files
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(
      names.slice(i, i + batch).map(async (name) => storage.store(keys.certificate(name), await readFile(dataset.unitPath(name), 'utf8'))),
    );
  }
}

/**
 * A fresh directory for `fileStorage` holding the first `names` units, as
 * hard links into the dataset (a second, not a minute, for 100k files; file
 * storage replaces files by rename, so a write never reaches the dataset),
 * or with `copies` as files of its own (falls back to copying across
 * filesystems anyway). Remove it with `dispose()`.
 *
 * Links share their inodes with the dataset, and making or removing a link
 * changes the inode's change time (ctime), which is part of a value's version
 * (file-io.ts `versionOf`). So every `fileStorageDir` (any bench, tool or
 * test on the machine, this function's own links included) and every
 * `dispose()` of one that links the same names changes the version of those
 * names' files in every other directory of links: a start-up index written
 * in one of them is then stale for those names, and the engine's check after
 * start-up re-reads their files. Copies have inodes of their own, which only
 * their directory's writes change: what a restarted server's files see.
 */
export async function fileStorageDir(dataset: Dataset, names = dataset.names, options: { copies?: boolean } = {}): Promise<{ dir: string; dispose(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-bench-'));
  await mkdir(path.join(dir, 'certificates'), { mode: 0o700 });
  let place: (from: string, to: string) => Promise<void> = options.copies ? copyFile : link;
  const batch = 256;
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(
      names.slice(i, i + batch).map(async (name) => {
        const to = path.join(dir, keys.certificate(name));
        try {
          await place(dataset.unitPath(name), to);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
          place = copyFile;
          await copyFile(dataset.unitPath(name), to);
        }
      }),
    );
  }
  return { dir, dispose: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Change the version of every named file in `dir` (its ctime: a `chmod` to
 * the mode it has, content untouched), as a restore from backup or a copy
 * that keeps nothing but the content would: a start-up index written before
 * is then stale for every name. On a directory of links this changes the
 * dataset's inodes too (see `fileStorageDir`): use it on copies.
 */
export async function touchVersions(dir: string, names: string[]): Promise<void> {
  const batch = 256;
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(names.slice(i, i + batch).map((name) => chmod(path.join(dir, keys.certificate(name)), 0o600)));
  }
}

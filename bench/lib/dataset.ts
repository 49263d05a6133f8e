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
 */
import { generateKeyPairSync } from 'node:crypto';
import { link, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { localCaCertificate } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { keys } from '../../src/storage-keys.js';
import type { Storage } from '../../src/types.js';
import { runWorker } from './children.js';
import { BENCH_DIR } from './paths.js';

export const DATASET_DIR = path.join(BENCH_DIR, '.cache', 'dataset');
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
}

export interface Dataset {
  dir: string;
  /** The first `count` names, in order. */
  names: string[];
  /** The CA's certificate (PEM), for clients that verify. */
  caPem: string;
  /** Path of a name's certificate unit inside the dataset. */
  unitPath(name: string): string;
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
    manifest = { format: FORMAT, count: 0, mintedAt: Date.now(), caId: 'default', issuerId: 'local-ca:default' };
    await writeFile(MANIFEST, JSON.stringify(manifest));
  }
  if (manifest.count < count) {
    const started = Date.now();
    const workers = Math.max(1, Math.min(os.availableParallelism(), 8));
    const missing = count - manifest.count;
    log(`dataset: minting ${missing} certificates (${manifest.count} cached) on ${workers} threads…`);
    const per = Math.ceil(missing / workers);
    await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const from = manifest!.count + w * per;
        const to = Math.min(count, from + per);
        if (from >= to) return Promise.resolve();
        // ~3 ms a certificate on one core; a generous bound so a stuck worker still ends.
        return runWorker(new URL('./mint-worker.ts', import.meta.url), { dir: DATASET_DIR, from, to, validityMs: LEAF_VALIDITY_MS }, 60_000 + (to - from) * 50);
      }),
    );
    manifest.count = count;
    await writeFile(MANIFEST, JSON.stringify(manifest));
    log(`dataset: minted ${missing} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  const caUnit = JSON.parse(await readFile(path.join(DATASET_DIR, keys.localCa('default')), 'utf8')) as { certificatePem: string };
  return {
    dir: DATASET_DIR,
    names: Array.from({ length: count }, (_, i) => nameOf(i)),
    caPem: caUnit.certificatePem,
    unitPath: (name) => path.join(DATASET_DIR, keys.certificate(name)),
  };
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
 * storage replaces files by rename, so a write never reaches the dataset).
 * Falls back to copying across filesystems. Remove it with `dispose()`.
 */
export async function fileStorageDir(dataset: Dataset, names = dataset.names): Promise<{ dir: string; dispose(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-bench-'));
  await mkdir(path.join(dir, 'certificates'), { mode: 0o700 });
  let place: (from: string, to: string) => Promise<void> = link;
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

/**
 * Worker thread: mint certificate units `from`..`to` of the dataset with the
 * dataset's CA and shared leaf key, and write them in fileStorage's layout.
 */
import { createPrivateKey } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { serializeStoredCertificate } from '../../src/engine/stored.js';
import { keys } from '../../src/storage-keys.js';
import { nameOf } from './dataset.js';

const { dir, from, to, validityMs } = workerData as { dir: string; from: number; to: number; validityMs: number };

const storage = memoryStorage();
await storage.store(keys.localCa('default'), await readFile(path.join(dir, keys.localCa('default')), 'utf8'));
const leafKey = createPrivateKey(await readFile(path.join(dir, 'leaf-key.pem'), 'utf8'));
const ca = localCaIssuer({ leafKey, leafValidityMs: validityMs });
const context = { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: Date.now };

for (let i = from; i < to; i++) {
  const name = nameOf(i);
  const bundle = await ca.issue({ names: [name] }, context);
  // serializeStoredCertificate takes only `issuerId` from the caller (it computes the stored metadata from the certificate).
  const unit = serializeStoredCertificate(bundle, { issuerId: ca.id }, Date.now());
  await writeFile(path.join(dir, keys.certificate(name)), unit, { mode: 0o600 });
}
parentPort!.postMessage({ minted: to - from });

/**
 * Stored bytes of any shape count as absent for obtaining: invalid UTF-8,
 * truncated JSON, foreign JSON, a certificate beside the wrong key, a
 * certificate of another name, binary noise — in the certificate unit and in
 * the failure record, on memory, file, Redis and PostgreSQL storage. Each
 * shape: the name obtains a certificate with one order and exactly one
 * warning line about the stored value, never a stuck name.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { postgresStorage } from '../src/adapters/storage/postgres.js';
import { redisStorage } from '../src/adapters/storage/redis.js';
import { createCertEngine } from '../src/engine/engine.js';
import { serializeStoredCertificate } from '../src/engine/stored.js';
import { parseCertificateBundle } from '../src/certs.js';
import { keys } from '../src/storage-keys.js';
import type { Storage } from '../src/types.js';
import { POSTGRES_URL, REDIS_URL, suiteCanRun, withPostgres, withRedis } from './helpers/backends.js';
import { captureLogs } from './helpers/log-capture.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

const NAME = 'bytes.example.com';

/** A valid stored unit for `name`, with its own key swapped for another's when `mismatch`. */
async function validUnit(name: string, mismatch = false): Promise<string> {
  const ca = memoryStorage();
  await installTestCa(ca);
  const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
  const context = { signal: new AbortController().signal, logger: undefined as never, storage: ca, now: Date.now };
  const bundle = await issuer.issue({ names: [name] }, context);
  const meta = parseCertificateBundle(bundle, issuer.id);
  if (mismatch) {
    const { generateKeyPairSync } = await import('node:crypto');
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    return serializeStoredCertificate({ ...bundle, privateKeyPem: other }, meta, Date.now());
  }
  return serializeStoredCertificate(bundle, meta, Date.now());
}

/** The shapes, as raw bytes. */
async function shapes(): Promise<Array<{ label: string; bytes: Buffer; what: 'certificate' | 'failure' }>> {
  const good = await validUnit(NAME);
  const other = await validUnit('other.example.com');
  const mismatched = await validUnit(NAME, true);
  const invalidUtf8 = Buffer.concat([Buffer.from(good.slice(0, 40)), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from(good.slice(40))]);
  return [
    { label: 'invalid UTF-8 unit', bytes: invalidUtf8, what: 'certificate' },
    { label: 'truncated unit', bytes: Buffer.from(good.slice(0, Math.floor(good.length / 2))), what: 'certificate' },
    { label: 'empty unit', bytes: Buffer.alloc(0), what: 'certificate' },
    { label: 'foreign JSON object', bytes: Buffer.from('{"hello":"world","version":1}'), what: 'certificate' },
    { label: 'JSON null', bytes: Buffer.from('null'), what: 'certificate' },
    { label: 'JSON array', bytes: Buffer.from('[1,2,3]'), what: 'certificate' },
    { label: 'right shape, wrong types', bytes: Buffer.from('{"version":1,"issuerId":7,"certificatePem":[],"privateKeyPem":{}}'), what: 'certificate' },
    { label: 'right shape, PEM garbage', bytes: Buffer.from('{"version":1,"issuerId":"x","certificatePem":"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n","privateKeyPem":"nope","storedAt":1}'), what: 'certificate' },
    { label: 'mismatched key and certificate', bytes: Buffer.from(mismatched), what: 'certificate' },
    { label: "another name's certificate", bytes: Buffer.from(other), what: 'certificate' },
    { label: 'binary noise unit', bytes: randomBytes(2048), what: 'certificate' },
    { label: 'invalid UTF-8 failure record', bytes: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), what: 'failure' },
    { label: 'foreign failure record', bytes: Buffer.from('{"attempts":"many","nextAttemptAt":"soon"}'), what: 'failure' },
    { label: 'binary noise failure record', bytes: randomBytes(512), what: 'failure' },
  ];
}

interface Backend {
  storage: Storage;
  /** Put raw bytes at a storage key, behind the storage's back. */
  put(key: string, bytes: Buffer): Promise<void>;
  close(): Promise<void>;
}

/** Lines that say a stored value was ignored or replaced (the warning this is about). */
function storedValueWarnings(lines: string[]): string[] {
  return lines.filter((line) => {
    const entry = JSON.parse(line) as { level: number; msg: string };
    return entry.level >= 40 && /stored|corrupt/i.test(entry.msg);
  });
}

async function obtainsWithOneWarning(backend: Backend, shape: { label: string; bytes: Buffer; what: 'certificate' | 'failure' }, managed: boolean) {
  await installTestCa(backend.storage);
  await backend.put(shape.what === 'certificate' ? keys.certificate(NAME) : keys.failure(NAME), shape.bytes);
  const logs = captureLogs('info');
  const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
  const engine = createCertEngine({
    storage: backend.storage,
    issuers: [issuer],
    logger: logs.logger,
    sessionTickets: false,
    storageCleaner: false,
    handshakeTimeout: 20_000,
    ...(managed ? { names: [NAME] } : { onDemand: { decide: () => true } }),
  });
  await engine.start();
  try {
    let served = await engine.getCertificate(NAME).catch((error: unknown) => error as Error);
    // A certificate beside the wrong key is only found out when its TLS context is built: that
    // first handshake may be refused while a new certificate is obtained; the next one is served.
    if (served instanceof Error) {
      assert.equal(shape.label, 'mismatched key and certificate', `${shape.label}: refused with ${served.message}`);
      for (let i = 0; i < 200 && !(engine.statusOf(NAME)?.state === 'valid' && issuer.calls === 1); i++) await new Promise((r) => setTimeout(r, 10));
      served = await engine.getCertificate(NAME);
    }
    assert.ok(!(served instanceof Error));
    assert.ok(served.meta.names.includes(NAME), `${shape.label}: served a certificate for the name`);
    assert.equal(issuer.calls, 1, `${shape.label}: one order`);
    assert.equal(engine.statusOf(NAME)?.state, 'valid', `${shape.label}: valid`);
    const warnings = storedValueWarnings(logs.lines());
    assert.equal(warnings.length, 1, `${shape.label}: exactly one warning about the stored value, got ${warnings.length}: ${warnings.join('')}`);
    // Nothing else went wrong on the way: e.g. the order noted for the issuance floor read the
    // undecodable failure record as absent, and was recorded.
    const others = logs.lines().filter((line) => (JSON.parse(line) as { level: number }).level >= 40 && !warnings.includes(line));
    assert.deepEqual(others, [], `${shape.label}: no other warning`);
  } finally {
    await engine.stop();
  }
}

async function runShapes(label: string, open: () => Promise<Backend>, only?: (label: string) => boolean) {
  describe(`stored bytes of any shape count as absent (${label})`, async () => {
    for (const shape of await shapes()) {
      if (only && !only(shape.label)) continue;
      for (const managed of [true, false]) {
        it(`${shape.label} (${managed ? 'managed' : 'on-demand'}): obtains with one warning`, async () => {
          const backend = await open();
          try {
            await obtainsWithOneWarning(backend, shape, managed);
          } finally {
            await backend.close();
          }
        });
      }
    }
  });
}

await runShapes('memory', async () => {
  const storage = memoryStorage();
  // Memory storage holds strings: bytes as the lossless latin1 string (any code unit 0–255).
  return { storage, put: (key, bytes) => storage.store(key, bytes.toString('latin1')), close: async () => {} };
});

const fileRoots: string[] = [];
after(async () => {
  for (const root of fileRoots) await rm(root, { recursive: true, force: true });
});
await runShapes('file', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'certstate-bytes-'));
  fileRoots.push(root);
  const storage = fileStorage(root);
  return {
    storage,
    put: async (key, bytes) => {
      const file = path.join(root, ...key.split('/'));
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, bytes, { mode: 0o600 });
    },
    close: async () => {},
  };
});

// The servers: the shapes only bytes can take (the others are strings, as above).
const bytesOnly = (label: string) => /UTF-8|binary/.test(label);

if (await suiteCanRun('redis', 'stored bytes on Redis')) {
  await runShapes('redis', async () => {
    const prefix = `certstate-bytes:${randomUUID()}:`;
    const storage = redisStorage({ url: REDIS_URL, prefix });
    return {
      storage,
      put: (key, bytes) => withRedis(REDIS_URL, async (client) => void (await client.hset(`${prefix}data:${key}`, 'v', bytes))),
      close: async () => {
        await storage.close?.();
        await withRedis(REDIS_URL, async (client) => {
          const found = await client.keys(`${prefix}*`);
          if (found.length) await client.del(...found);
        });
      },
    };
  }, bytesOnly);
}

if (await suiteCanRun('postgres', 'stored bytes on PostgreSQL')) {
  await runShapes('postgres', async () => {
    const table = `certstate_bytes_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const storage = postgresStorage({ connectionString: POSTGRES_URL, table });
    await storage.migrate?.();
    return {
      storage,
      put: (key, bytes) =>
        withPostgres(POSTGRES_URL, async (client) => {
          await client.query(`INSERT INTO "${table}" (key, value, modified) VALUES ($1, $2, now()) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, [key, bytes]);
        }),
      close: async () => {
        await storage.close?.();
        await withPostgres(POSTGRES_URL, (client) => client.query(`DROP TABLE IF EXISTS "${table}", "${table}_locks", "${table}_index"`));
      },
    };
  }, bytesOnly);
}

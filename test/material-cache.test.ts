/**
 * The key material cache keeps a certificate's PEMs as bytes outside V8's
 * heap (a heap full of PEM strings cost every handshake CPU: BENCHMARKS.md,
 * "Handshake CPU and the heap"). What must not change for a user: the PEMs
 * read back are exactly the ones stored, a served certificate shows them as
 * fields (spread, JSON), and they stay readable after the cache evicts them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine } from '../src/engine/engine.js';
import { MaterialCache } from '../src/engine/material-cache.js';
import { keys } from '../src/storage-keys.js';
import { parseStoredCertificate } from '../src/engine/stored.js';

describe('material cache', () => {
  it('reads back exactly the PEMs it was given, text outside the blocks and non-ASCII included', () => {
    const cache = new MaterialCache(10);
    const bundle = { certificatePem: 'Subject: CN=café ☃ 𝄞\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', privateKeyPem: '-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n' };
    cache.put('F1', bundle);
    assert.deepEqual(cache.bundle('F1'), bundle);
    assert.equal(cache.pems('F1')?.certificatePem(), bundle.certificatePem);
    assert.equal(cache.pems('F1')?.privateKeyPem(), bundle.privateKeyPem);
  });

  it('keeps bytes read before an eviction readable after it', () => {
    const cache = new MaterialCache(1);
    const first = { certificatePem: 'cert one', privateKeyPem: 'key one' };
    cache.put('F1', first);
    const pems = cache.pems('F1')!;
    cache.put('F2', { certificatePem: 'cert two', privateKeyPem: 'key two' });
    assert.equal(cache.has('F1'), false);
    assert.deepEqual(pems.bundle(), first);
  });

  it('serves a certificate whose PEM fields are the stored ones: read, spread, JSON, and after eviction', async () => {
    const storage = memoryStorage();
    const engine = createCertEngine({ storage, issuers: [localCaIssuer()], names: ['a.test', 'b.test'], cacheCapacity: 1 });
    try {
      await engine.start();
      const served = await engine.getCertificate('a.test');
      const stored = parseStoredCertificate(keys.certificate('a.test'), (await storage.load(keys.certificate('a.test')))!);
      assert.equal(served.certificatePem, stored.bundle.certificatePem);
      assert.equal(served.privateKeyPem, stored.bundle.privateKeyPem);
      const spread = { ...served };
      assert.equal(spread.certificatePem, stored.bundle.certificatePem);
      assert.equal(spread.privateKeyPem, stored.bundle.privateKeyPem);
      const json = JSON.parse(JSON.stringify({ ...served, secureContext: undefined })) as { certificatePem: string; privateKeyPem: string };
      assert.equal(json.privateKeyPem, stored.bundle.privateKeyPem);
      assert.deepEqual(Object.keys(served).sort(), ['certificatePem', 'expired', 'meta', 'privateKeyPem', 'secureContext']);
      // b.test's certificate pushes a.test's out of a cache of one; what was served stays readable.
      await engine.getCertificate('b.test');
      assert.equal(engine.stats.cachedCertificates, 1);
      assert.equal(served.certificatePem, stored.bundle.certificatePem);
      assert.equal(served.privateKeyPem, stored.bundle.privateKeyPem);
    } finally {
      await engine.stop();
    }
  });
});

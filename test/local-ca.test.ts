import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPublicKey, generateKeyPair as generateKeyPairCallback, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { localCaCertificate, localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { parseCertificateBundle, splitPemChain } from '../src/certs.js';
import { ConfigError, IssuanceError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { IssueContext, Storage } from '../src/types.js';

const CA_KEY = keys.localCa('default');
const generateKeyPair = promisify(generateKeyPairCallback);

/** Storage that counts calls per method and key, to observe what the issuer does. */
function countingStorage(inner: Storage = memoryStorage()) {
  const calls: string[] = [];
  const storage: Storage = {
    description: 'counting',
    load: (key) => (calls.push(`load ${key}`), inner.load(key)),
    store: (key, value, options) => (calls.push(`store ${key}`), inner.store(key, value, options)),
    delete: (key) => inner.delete(key),
    list: (prefix) => inner.list(prefix),
    stat: (key) => inner.stat(key),
    lock: (key, ttl, options) => (calls.push(`lock ${key}`), inner.lock(key, ttl, options)),
  };
  const count = (call: string) => calls.filter((c) => c === call).length;
  return { storage, calls, count };
}

function context(storage: Storage, overrides: Partial<IssueContext> = {}): IssueContext {
  return { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: Date.now, ...overrides };
}

describe('localCaIssuer', () => {
  it('issues a leaf + CA chain that verifies against the CA, with the requested names and extensions', async () => {
    const storage = memoryStorage();
    const now = 1_900_000_000_000;
    const issuer = localCaIssuer({ leafValidityMs: 30_000 });
    assert.equal(issuer.id, 'local-ca:default');
    const names = ['localhost', '127.0.0.1', '::1', '*.dev.test', '::ffff:1.2.3.4'];
    const bundle = await issuer.issue({ names }, context(storage, { now: () => now }));

    const [leafPem, caPem, extra] = splitPemChain(bundle.certificatePem);
    assert.equal(extra, undefined);
    assert.equal(caPem, await localCaCertificate(storage));
    const leaf = new X509Certificate(leafPem);
    const ca = new X509Certificate(caPem);
    assert.ok(leaf.checkIssued(ca), 'issued by the CA');
    assert.ok(leaf.verify(ca.publicKey), 'signature verifies with the CA key');
    assert.ok(ca.verify(ca.publicKey), 'CA is self-signed');
    assert.equal(ca.ca, true);
    assert.equal(leaf.ca, false);
    assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']); // node reports the extended key usage here
    assert.equal(leaf.subject, 'CN=localhost');
    assert.equal(
      leaf.subjectAltName,
      'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:*.dev.test, IP Address:0:0:0:0:0:FFFF:102:304',
    );
    for (const ip of ['127.0.0.1', '::1', '::ffff:1.2.3.4']) assert.equal(leaf.checkIP(ip), ip);
    assert.equal(leaf.checkHost('a.dev.test'), '*.dev.test');

    const meta = parseCertificateBundle(bundle, issuer.id);
    assert.equal(meta.notBefore, now - 60_000);
    assert.equal(meta.notAfter, now - 60_000 + 30_000);
    assert.match(meta.serial, /^[0-9A-F]{29,32}$/);
    assert.ok(meta.ariCertId, 'leaf carries an AKI');
    const caKeyId = Buffer.from(meta.ariCertId.split('.')[0], 'base64url');
    assert.equal(caKeyId.length, 20);
  });

  it('serves a real TLS handshake that a client trusting only the CA accepts', async () => {
    const storage = memoryStorage();
    const bundle = await localCaIssuer().issue({ names: ['localhost', '127.0.0.1'] }, context(storage));
    const caPem = await localCaCertificate(storage);
    const server = tls.createServer({ cert: bundle.certificatePem, key: bundle.privateKeyPem }, (socket) => socket.end('hi'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    try {
      const connect = (options: tls.ConnectionOptions) =>
        new Promise<string>((resolve, reject) => {
          const socket = tls.connect({ host: '127.0.0.1', port, ...options }, () => {
            socket.setEncoding('utf8');
            let data = '';
            socket.on('data', (chunk: string) => (data += chunk)).on('end', () => resolve(data));
          });
          socket.on('error', reject);
        });
      assert.equal(await connect({ servername: 'localhost', ca: [caPem] }), 'hi');
      assert.equal(await connect({ ca: [caPem] }), 'hi'); // identity checked against the IP SAN
      await assert.rejects(connect({ servername: 'localhost' }), /self-signed certificate in certificate chain/);
      await assert.rejects(connect({ servername: 'other.test', ca: [caPem] }), /Hostname\/IP does not match/);
    } finally {
      server.close();
    }
  });

  it('creates exactly one CA when two issuers share a storage and race', async () => {
    const { storage, count } = countingStorage();
    const [a, b] = [localCaIssuer(), localCaIssuer()];
    const [one, two] = await Promise.all([
      a.issue({ names: ['a.test'] }, context(storage)),
      b.issue({ names: ['b.test'] }, context(storage)),
    ]);
    assert.equal(count(`lock locks/local-ca/default`), 2, 'both saw no CA and raced for the lock');
    assert.equal(count(`store ${CA_KEY}`), 1, 'only the lock winner created the CA');
    const caOne = splitPemChain(one.certificatePem)[1];
    assert.equal(caOne, splitPemChain(two.certificatePem)[1]);
    const ca = new X509Certificate(caOne);
    for (const bundle of [one, two]) assert.ok(new X509Certificate(splitPemChain(bundle.certificatePem)[0]).verify(ca.publicKey));
  });

  it('loads the CA from storage once per issuer instance', async () => {
    const { storage, count } = countingStorage();
    const issuer = localCaIssuer();
    await issuer.issue({ names: ['a.test'] }, context(storage));
    await issuer.issue({ names: ['b.test'] }, context(storage));
    await issuer.issue({ names: ['c.test'] }, context(storage));
    assert.equal(count(`load ${CA_KEY}`), 2, 'one load, one re-load under the lock, then memory');
    await localCaIssuer().issue({ names: ['d.test'] }, context(storage));
    assert.equal(count(`load ${CA_KEY}`), 3, 'a second instance loads the stored CA');
    assert.equal(count(`store ${CA_KEY}`), 1);
  });

  it('keeps separate CAs per caId', async () => {
    const storage = memoryStorage();
    const issuer = localCaIssuer({ caId: 'other', commonName: 'Other dev CA' });
    assert.equal(issuer.id, 'local-ca:other');
    const bundle = await issuer.issue({ names: ['a.test'] }, context(storage));
    const ca = new X509Certificate(splitPemChain(bundle.certificatePem)[1]);
    assert.equal(ca.subject, 'CN=Other dev CA');
    assert.equal(ca.toString(), await localCaCertificate(storage, 'other'));
    assert.notEqual(await localCaCertificate(storage), ca.toString());
  });

  it('honours an aborted signal before and during issuance', async () => {
    const { storage, calls } = countingStorage();
    const issuer = localCaIssuer();
    const aborted = new AbortController();
    aborted.abort(new Error('stopped before'));
    await assert.rejects(issuer.issue({ names: ['a.test'] }, context(storage, { signal: aborted.signal })), /stopped before/);
    assert.deepEqual(calls, [], 'nothing touched storage');

    const during = new AbortController();
    const attempt = issuer.issue({ names: ['a.test'] }, context(storage, { signal: during.signal }));
    // A bigger key generation started alongside: the abort must win the race against it (no wall-clock bound to flake).
    const reference = generateKeyPair('rsa', { modulusLength: 3072 });
    setImmediate(() => during.abort(new Error('stopped during')));
    const first = await Promise.race([attempt.then(() => 'issued', () => 'aborted'), reference.then(() => 'keygen')]);
    assert.equal(first, 'aborted', 'did not wait for key generation to finish');
    await assert.rejects(attempt, /stopped during/);
  });

  it('reports a corrupt stored CA without replacing it, and recovers once it is removed', async () => {
    const storage = memoryStorage();
    await storage.store(CA_KEY, '{"certificatePem":"nope","privateKeyPem":"nope"}');
    const issuer = localCaIssuer();
    await assert.rejects(
      issuer.issue({ names: ['a.test'] }, context(storage)),
      (error: unknown) => error instanceof IssuanceError && error.code === 'ERR_LOCAL_CA_CORRUPT',
    );
    assert.equal(await storage.load(CA_KEY), '{"certificatePem":"nope","privateKeyPem":"nope"}');
    await storage.delete(CA_KEY);
    const bundle = await issuer.issue({ names: ['a.test'] }, context(storage));
    assert.equal(splitPemChain(bundle.certificatePem)[1], await localCaCertificate(storage));
  });

  it('refuses an expired CA instead of issuing leaves nobody accepts', async () => {
    const storage = memoryStorage();
    const issuer = localCaIssuer({ caValidityDays: 1 });
    const now = Date.now();
    await issuer.issue({ names: ['a.test'] }, context(storage, { now: () => now }));
    await assert.rejects(
      issuer.issue({ names: ['a.test'] }, context(storage, { now: () => now + 2 * 86_400_000 })),
      (error: unknown) => error instanceof IssuanceError && error.code === 'ERR_LOCAL_CA_EXPIRED',
    );
  });

  it('omits the CN for a name longer than 64 characters and marks the SAN critical', async () => {
    const name = `${'a'.repeat(60)}.${'b'.repeat(10)}.test`;
    const bundle = await localCaIssuer().issue({ names: [name] }, context(memoryStorage()));
    const leaf = new X509Certificate(splitPemChain(bundle.certificatePem)[0]);
    assert.equal(leaf.subject, undefined);
    assert.equal(leaf.checkHost(name), name);
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: leaf.toString(), encoding: 'utf8' });
    assert.match(text, /X509v3 Subject Alternative Name: critical/);
  });

  it('validates options and names', async () => {
    assert.throws(() => localCaIssuer({ caId: '../escape' }), ConfigError);
    assert.throws(() => localCaIssuer({ caId: '..' }), ConfigError);
    assert.throws(() => localCaIssuer({ keyBits: 1024 }), ConfigError);
    assert.throws(() => localCaIssuer({ leafValidityMs: 0 }), ConfigError);
    assert.throws(() => localCaIssuer({ commonName: '' }), ConfigError);
    const issuer = localCaIssuer();
    for (const names of [[], ['bad name'], ['a.test\u0000'], ['fe80::1%eth0']]) {
      await assert.rejects(issuer.issue({ names }, context(memoryStorage())), IssuanceError);
    }
  });

  it('reuses a fixed leafKey when given one, and refuses a key that is not RSA', async () => {
    const leafKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const issuer = localCaIssuer({ leafKey });
    const bundle = await issuer.issue({ names: ['pinned.test'] }, context(memoryStorage()));
    assert.ok(new X509Certificate(splitPemChain(bundle.certificatePem)[0]).checkPrivateKey(leafKey));
    assert.equal(bundle.privateKeyPem, leafKey.export({ type: 'pkcs1', format: 'pem' }));
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    assert.throws(() => localCaIssuer({ leafKey: ec }), ConfigError);
    assert.throws(() => localCaIssuer({ leafKey: createPublicKey(leafKey) }), ConfigError);
  });

  it('measures the cost of one leaf issuance with a warm CA', async (t) => {
    const storage = memoryStorage();
    const issuer = localCaIssuer();
    await issuer.issue({ names: ['warm.test'] }, context(storage));
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      await issuer.issue({ names: [`n${i}.test`] }, context(storage));
      times.push(performance.now() - started);
    }
    times.sort((x, y) => x - y);
    t.diagnostic(`leaf issuance: median ${times[5].toFixed(1)} ms, min ${times[0].toFixed(1)} ms, max ${times[9].toFixed(1)} ms`);
    const pinned = localCaIssuer({ leafKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey });
    await pinned.issue({ names: ['warm.test'] }, context(storage));
    const fixed: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      await pinned.issue({ names: [`p${i}.test`] }, context(storage));
      fixed.push(performance.now() - started);
    }
    fixed.sort((x, y) => x - y);
    t.diagnostic(`leaf issuance with a fixed leafKey (no key generation): median ${fixed[5].toFixed(2)} ms`);
  });
});

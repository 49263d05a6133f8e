/**
 * Hostile input cannot hurt: fuzzed SNI values never leave the storage root
 * and never place an order without an allow; a full ACME issuance with EAB
 * leaves no private key or EAB secret in any log line, event or inspection
 * snapshot, and leaves only 0600 files in 0700 directories.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { acmeIssuer } from '../src/adapters/issuers/acme.js';
import { fileStorage } from '../src/adapters/storage/file.js';
import { createCertEngine } from '../src/engine/engine.js';
import { CertstateError } from '../src/errors.js';
import { startPebble, type PebbleHandle } from './helpers/pebble.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

async function walk(dir: string): Promise<Array<{ path: string; mode: number; isDir: boolean }>> {
  const out: Array<{ path: string; mode: number; isDir: boolean }> = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const s = await stat(path);
    out.push({ path, mode: s.mode & 0o777, isDir: entry.isDirectory() });
    if (entry.isDirectory()) out.push(...(await walk(path)));
  }
  return out;
}

const hostileCorpus = [
  'a/../../x', '../../etc/passwd', '..', '.', 'x\u0000.com', '%00.example.com', 'a'.repeat(64) + '.com', 'b.'.repeat(130) + 'com',
  'а.allowed.test', 'xn--zz.allowed.test', 'xn--a.allowed.test', '127.0.0.1', '::1', '[::1]', '*', '*.allowed.test',
  'a.b.c.d.e.f.g.h.i.j.k.allowed.test', 'a b.allowed.test', 'crlf\r\n.allowed.test', 'a..b.allowed.test', '-a.allowed.test',
  'x\\y.allowed.test', 'certificates/evil', 'CON', 'x.x.x.allowed.test', 'ok1.allowed.test', 'OK2.ALLOWED.TEST.',
];

describe('fuzzed SNI through the engine', () => {
  it('every value is normalised or refused with a typed error; nothing outside the root; no order without an allow', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'certstate-fuzz-'));
    const root = join(parent, 'root');
    const storage = fileStorage(root);
    await installTestCa(storage);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const allowed = (name: string) => name.endsWith('.allowed.test') && name.startsWith('ok');
    const engine = createCertEngine({
      storage,
      issuers: [issuer],
      onDemand: { decide: (name) => allowed(name), rateLimit: { burst: 1000, refillPerSecond: 1 } },
      handshakeTimeout: 10_000,
    });
    await engine.start();
    try {
      const sni = fc.oneof(
        fc.constantFrom(...hostileCorpus),
        fc.string({ unit: 'binary', maxLength: 80 }),
        fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('latin1')),
        fc.string({ maxLength: 30 }).map((s) => `${s}.allowed.test`),
        fc.string({ maxLength: 12, unit: fc.constantFrom('o', 'k', '1', '-', '.', '/', '\\') }).map((s) => `ok${s}.allowed.test`),
      );
      await fc.assert(
        fc.asyncProperty(sni, async (value) => {
          try {
            const served = await engine.getCertificate(value);
            assert.ok(allowed(served.meta.names[0]!), `served only allowed names (${JSON.stringify(value)})`);
          } catch (error) {
            assert.ok(error instanceof CertstateError, `typed error for ${JSON.stringify(value)}: ${String(error)}`);
          }
        }),
        { numRuns: 600 },
      );
      for (const value of hostileCorpus) await engine.getCertificate(value).catch((e: unknown) => assert.ok(e instanceof CertstateError));
      assert.ok(issuer.calls > 0, 'some allowed names were issued (the property exercised the issuing path)');
      for (const request of issuer.requests) assert.ok(request.names.every(allowed), `ordered only with an allow: ${request.names.join(',')}`);

      // The filesystem: only the storage root under the parent, and only well-formed keys inside it.
      assert.deepEqual(await readdir(parent), ['root']);
      for (const entry of await walk(root)) {
        const rel = relative(root, entry.path);
        assert.ok(!rel.startsWith('..'), `inside the root: ${rel}`);
        assert.match(rel, /^[A-Za-z0-9._~\-/]+$/, `safe path: ${JSON.stringify(rel)}`);
      }
    } finally {
      await engine.stop();
      await rm(parent, { recursive: true, force: true });
    }
  });
});

let pebble: PebbleHandle | undefined;
const kid = 'kid-secret';
const hmacKey = 'c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cy1vbmx5LWRvLW5vdC11c2UtMTIzNDU2Nzg';
let httpServer: http.Server;

describe('secrets stay secret through a full ACME issuance (EAB)', () => {
  before(async () => {
    httpServer = http.createServer();
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    pebble = await startPebble({ httpPort: (httpServer.address() as AddressInfo).port, externalAccountBindingRequired: true, externalAccountMACKeys: { [kid]: hmacKey } });
  });
  after(async () => {
    await pebble?.stop();
    await new Promise<void>((r) => httpServer.close(() => r()));
  });

  it('no PEM private key and no EAB secret in logs, events or inspection snapshots; 0600 files in 0700 dirs', async (t) => {
    if (!pebble) return t.skip('pebble not installed');
    const dir = await mkdtemp(join(tmpdir(), 'certstate-secrets-'));
    const captured: string[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (captured.push(chunk.toString()), done()) });
    const logger = pino({ level: 'trace' }, sink);
    const storage = fileStorage(dir);
    const engine = createCertEngine({
      storage,
      issuers: [acmeIssuer({ directoryUrl: pebble.directoryUrl, email: 'secrets@example.com', agreeToTerms: true, caBundle: pebble.caBundlePem, challenges: ['http-01'], externalAccountBinding: { kid, hmacKey } })],
      names: ['secret.example.com'],
      logger,
      inspect: (event) => captured.push(JSON.stringify(event, (_k, v: unknown) => (typeof v === 'function' ? '[fn]' : v))),
    });
    for (const type of ['cert_obtaining', 'cert_obtained', 'cert_failed', 'state_changed'] as const) engine.on(type, (e) => captured.push(JSON.stringify(e)));
    httpServer.removeAllListeners('request');
    httpServer.on('request', engine.httpChallengeHandler());
    try {
      await engine.start();
      const served = await engine.getCertificate('secret.example.com');
      captured.push(JSON.stringify(engine.status()));
      const everything = captured.join('\n');
      assert.ok(captured.length > 10, 'something was captured');
      assert.doesNotMatch(everything, /PRIVATE KEY/, 'no PEM private key anywhere');
      assert.ok(!everything.includes(hmacKey), 'no EAB HMAC key anywhere');
      const keyBody = served.privateKeyPem.split('\n').slice(1, 3).join('');
      assert.ok(!everything.includes(keyBody.slice(0, 40)), 'no private key material, even unwrapped');
      // Every file 0600, every directory 0700, after a real issuance.
      for (const entry of await walk(dir)) {
        if (entry.isDir) assert.equal(entry.mode, 0o700, `dir ${entry.path}`);
        else assert.equal(entry.mode, 0o600, `file ${entry.path}`);
      }
    } finally {
      await engine.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

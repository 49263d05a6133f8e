/**
 * The ACME issuer against a real ACME CA (Pebble 2.4 + pebble-challtestsrv),
 * for HTTP-01, TLS-ALPN-01 and DNS-01, plus small stub CAs for what Pebble
 * cannot do (429/503 + Retry-After, alreadyReplaced, profiles, hangs).
 *
 * Without Pebble the real-ACME suites skip with a message; with `CI` set they
 * fail instead (startPebble throws).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { axios as acmeAxios } from 'acme-client';
import pino from 'pino';
import { challtestsrvDnsProvider } from '../src/adapters/challenges/challtestsrv.js';
import type { DnsProvider } from '../src/adapters/challenges/dns-01.js';
import { watchedTokens } from '../src/adapters/challenges/challenge-fetches.js';
import { createHttpChallengeHandler } from '../src/adapters/challenges/http-01.js';
import { createTlsAlpnResponder } from '../src/adapters/challenges/tls-alpn-01.js';
import { acmeIssuer, type AcmeIssuerOptions } from '../src/adapters/issuers/acme.js';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { certificateCoversName, parseCertificateBundle, splitPemChain } from '../src/certs.js';
import {
  AccountError,
  AcmeError,
  AcmeNetworkError,
  AcmeRateLimitedError,
  AcmeTimeoutError,
  ChallengeFailedError,
  ConfigError,
  IssuanceError,
} from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { CertificateBundle, IssueContext, Storage } from '../src/types.js';
import { freePort, startPebble, type PebbleHandle } from './helpers/pebble.js';

const ACME = 'urn:ietf:params:acme:error:';
const silent = pino({ level: 'silent' });

function context(storage: Storage, signal: AbortSignal = new AbortController().signal): IssueContext {
  storages.add(storage);
  return { storage, signal, logger: silent, now: Date.now };
}

/** Walk leaf → … → top, then top → root: every link issued and signed by the next. */
function assertChainVerifies(bundle: CertificateBundle, rootPem: string, names: string[]): X509Certificate {
  const certs = splitPemChain(bundle.certificatePem).map((pem) => new X509Certificate(pem));
  assert.ok(certs.length >= 2, 'leaf plus at least one intermediate');
  for (let i = 0; i < certs.length - 1; i++) {
    assert.ok(certs[i]!.checkIssued(certs[i + 1]!), `certificate ${i} issued by ${i + 1}`);
    assert.ok(certs[i]!.verify(certs[i + 1]!.publicKey), `certificate ${i} signed by ${i + 1}`);
  }
  const root = new X509Certificate(rootPem);
  const top = certs[certs.length - 1]!;
  assert.ok(top.checkIssued(root), 'top of chain issued by the root');
  assert.ok(top.verify(root.publicKey), 'top of chain signed by the root');
  const leaf = certs[0]!;
  assert.ok(leaf.checkPrivateKey(createPrivateKey(bundle.privateKeyPem)), 'leaf matches the returned key');
  const san = leaf.subjectAltName ?? '';
  for (const name of names) assert.ok(san.split(/,\s*/).includes(`DNS:${name}`), `SAN ${san} covers ${name}`);
  return leaf;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A DnsProvider that records calls and can run a hook after `set`. */
function spyProvider(inner: DnsProvider, afterSet?: () => void) {
  const calls: string[] = [];
  const provider: DnsProvider = {
    async set(fqdn, value, options) {
      calls.push(`set ${fqdn}`);
      await inner.set(fqdn, value, options);
      afterSet?.();
    },
    async remove(fqdn, value, options) {
      calls.push(`remove ${fqdn}`);
      await inner.remove(fqdn, value, options);
    },
  };
  return { provider, calls };
}

function selfSigned(cn: string): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'certstate-acme-test-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '2', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'k.pem'), 'utf8'), cert: readFileSync(join(dir, 'c.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// ─── The shared real CA and the servers its VA dials ──────────────────────

const storage = memoryStorage();
/** Every storage a test issues with: the VA-facing servers answer from all of them. */
const storages = new Set<Storage>([storage]);
const anyStorage = {
  async load(key: string) {
    for (const s of storages) {
      const value = await s.load(key);
      if (value !== undefined) return value;
    }
    return undefined;
  },
} as Storage;
/** Hosts whose HTTP-01 requests get a 404 (validation broken on purpose). */
const brokenHttpHosts = new Set<string>();
const challengeHandler = createHttpChallengeHandler(anyStorage);
const httpServer = http.createServer((req, res) => {
  const host = (req.headers.host ?? '').replace(/:\d+$/, '');
  if (brokenHttpHosts.has(host)) {
    res.statusCode = 404;
    return res.end('gone');
  }
  challengeHandler(req, res);
});
/** The application's own (ECDSA) certificate, served through its SNI callback. */
const appCert = selfSigned('app.test');
const appContext = tls.createSecureContext(appCert);
const alpn = createTlsAlpnResponder(anyStorage);
const sniCalls: string[] = [];
// No default key/cert on the server, as the engine's tlsOptions() has none:
// see the "default certificate" test below for why.
const tlsServer = tls.createServer(
  {
    ALPNCallback: alpn.ALPNCallback,
    SNICallback: alpn.wrapSNICallback((name, cb) => {
      sniCalls.push(name);
      cb(null, appContext);
    }),
  },
  (socket) => socket.end('hello'),
);
tlsServer.on('tlsClientError', () => undefined);
const httpPort = await listen(httpServer);
const tlsPort = await listen(tlsServer);
const pebble: PebbleHandle | undefined = await startPebble({ httpPort, tlsPort, certificateValidityPeriod: 3600, alternateRoots: 1 });
const skip = pebble ? false : 'pebble is not installed (apt-get install pebble)';

after(async () => {
  await pebble?.stop();
  await close(httpServer);
  await close(tlsServer);
});

function pebbleIssuer(extra: Partial<AcmeIssuerOptions> = {}) {
  return acmeIssuer({ directoryUrl: pebble!.directoryUrl, email: 'ops@example.com', agreeToTerms: true, caBundle: pebble!.caBundlePem, ...extra });
}

describe('acmeIssuer against Pebble', { skip }, () => {
  let rootPem: string;
  before(async () => {
    rootPem = await pebble!.rootsPem(0);
  });

  it('issues with HTTP-01 (two names), the chain verifies against Pebble\'s root, tokens are cleaned', async () => {
    const names = ['http01.example.com', 'www.http01.example.com'];
    const ordersBefore = pebble!.orderCount();
    const bundle = await pebbleIssuer({ challenges: ['http-01'] }).issue({ names }, context(storage));
    assert.equal(pebble!.orderCount(), ordersBefore + 1, 'one order in Pebble\'s log');
    const leaf = assertChainVerifies(bundle, rootPem, names);
    // (Pebble picks the subject CN among the SANs itself, ignoring the CSR's CN.)
    // certificateValidityPeriod reached Pebble: one hour of validity.
    const lifetime = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
    assert.ok(Math.abs(lifetime - 3600_000) <= 2000, `lifetime ${lifetime} ms`);
    assert.deepEqual(await storage.list('challenges/'), []);
  });

  it('issues with TLS-ALPN-01 answered by the same TLS server that serves normal traffic', async () => {
    const names = ['alpn.example.com'];
    sniCalls.length = 0;
    const bundle = await pebbleIssuer({ challenges: ['tls-alpn-01'] }).issue({ names }, context(storage));
    assertChainVerifies(bundle, rootPem, names);
    assert.deepEqual(await storage.list('challenges/'), []);
    // The validation handshake never reached the application's SNI callback.
    assert.deepEqual(sniCalls, []);
  });

  it('issues with DNS-01 through challtestsrv, and removes the TXT record', async () => {
    const names = ['dns01.example.com'];
    const { provider, calls } = spyProvider(challtestsrvDnsProvider(pebble!.challtestsrv.url));
    const bundle = await pebbleIssuer({ challenges: ['dns-01'], dnsProvider: provider }).issue({ names }, context(storage));
    assertChainVerifies(bundle, rootPem, names);
    assert.deepEqual(calls, ['set _acme-challenge.dns01.example.com', 'remove _acme-challenge.dns01.example.com']);
  });

  it('issues a wildcard: the wildcard goes to DNS-01, the base name to the preferred HTTP-01', async () => {
    const names = ['*.wild.example.com', 'wild.example.com'];
    const { provider, calls } = spyProvider(challtestsrvDnsProvider(pebble!.challtestsrv.url));
    // dns-01 is not even in the list: wildcards take it anyway, given a provider.
    const bundle = await pebbleIssuer({ challenges: ['http-01'], dnsProvider: provider }).issue({ names }, context(storage));
    const leaf = assertChainVerifies(bundle, rootPem, names);
    assert.equal(leaf.checkHost('anything.wild.example.com'), '*.wild.example.com');
    assert.deepEqual(calls, ['set _acme-challenge.wild.example.com', 'remove _acme-challenge.wild.example.com']);
    assert.deepEqual(await storage.list('challenges/'), []);
  });

  it('issues for IP identifiers (RFC 8738): IPv4 and IPv6, the IPv6 certificate accepted by its parsed SAN', async (t) => {
    // Pebble's VA dials the address itself at the HTTP-01 port: answer on [::1] too.
    const v6 = http.createServer((req, res) => challengeHandler(req, res));
    const listening = await new Promise<boolean>((resolve) => {
      v6.once('error', () => resolve(false));
      v6.listen(httpPort, '::1', () => resolve(true));
    });
    if (!listening) {
      if (process.env.CI) assert.fail('IPv6 loopback (::1) is not available');
      return t.skip('*** SKIP: no IPv6 loopback (::1) on this machine ***');
    }
    try {
      for (const names of [['127.0.0.1'], ['::1']]) {
        const ordersBefore = pebble!.orderCount();
        // Before the fix OpenSSL's SAN text `IP Address:0:0:0:0:0:0:0:1` never matched `::1`: the issuer threw after issuance.
        const bundle = await pebbleIssuer({ challenges: ['http-01'] }).issue({ names }, context(storage));
        assert.equal(pebble!.orderCount(), ordersBefore + 1, 'one order');
        const meta = parseCertificateBundle(bundle, 'pebble');
        assert.deepEqual(meta.names, names, 'the SAN holds the address, canonical');
        assert.ok(certificateCoversName(meta, names[0]!));
        assert.ok(certificateCoversName(meta, names[0] === '::1' ? '0:0:0:0:0:0:0:1' : '127.0.0.1'), 'any spelling of the address');
      }
    } finally {
      await close(v6);
    }
  });

  it('refuses a wildcard without a dnsProvider before placing any order', async () => {
    const before = pebble!.orderCount();
    await assert.rejects(pebbleIssuer({ challenges: ['http-01'] }).issue({ names: ['*.nodns.example.com'] }, context(storage)), (e: unknown) => {
      assert.ok(e instanceof IssuanceError);
      assert.equal(e.code, 'ERR_WILDCARD_NEEDS_DNS01');
      return true;
    });
    assert.equal(pebble!.orderCount(), before);
  });

  it('HTTP-01 answered with 404 → ChallengeFailedError with Pebble\'s problem, tokens cleaned', async () => {
    brokenHttpHosts.add('broken-http.example.com');
    try {
      await assert.rejects(pebbleIssuer({ challenges: ['http-01'] }).issue({ names: ['broken-http.example.com'] }, context(storage)), (e: unknown) => {
        assert.ok(e instanceof ChallengeFailedError, String(e));
        assert.equal(e.code, 'ERR_ACME_CHALLENGE_FAILED', 'the class\'s code, whatever the CA said');
        assert.ok(e.problemType?.startsWith(ACME), e.problemType);
        assert.equal(e.identifier, 'broken-http.example.com');
        assert.equal(e.challengeType, 'http-01');
        assert.match(e.detail ?? '', /404/);
        assert.match(e.message, /404/);
        return true;
      });
    } finally {
      brokenHttpHosts.delete('broken-http.example.com');
    }
    assert.deepEqual(await storage.list('challenges/'), []);
  });

  it('DNS SERVFAIL → ChallengeFailedError carrying the dns problem, TXT removed', async () => {
    const host = '_acme-challenge.broken-dns.example.com';
    await pebble!.challtestsrv.setServfail(host);
    const { provider, calls } = spyProvider(challtestsrvDnsProvider(pebble!.challtestsrv.url));
    try {
      await assert.rejects(pebbleIssuer({ challenges: ['dns-01'], dnsProvider: provider }).issue({ names: ['broken-dns.example.com'] }, context(storage)), (e: unknown) => {
        assert.ok(e instanceof ChallengeFailedError, String(e));
        // Pebble 2.4 reports a failed TXT lookup as `unauthorized`, rcode 2 (SERVFAIL) in the detail.
        assert.equal(e.problemType, `${ACME}unauthorized`);
        assert.equal(e.challengeType, 'dns-01');
        assert.match(e.detail ?? '', /_acme-challenge\.broken-dns\.example\.com.*unsuccessful response/);
        return true;
      });
    } finally {
      await pebble!.challtestsrv.clearServfail(host);
    }
    assert.deepEqual(calls, [`set ${host}`, `remove ${host}`]);
  });

  it('reuses one account across issuer instances and across concurrent first attempts', async () => {
    const shared = memoryStorage();
    const accountsBefore = pebble!.accountCount();
    const a = pebbleIssuer({ email: 'reuse@example.com' });
    const b = pebbleIssuer({ email: 'reuse@example.com' });
    // Both start with an empty storage at the same time: the account lock
    // and the re-read after it make this one registration.
    await Promise.all([a.issue({ names: ['reuse-a.example.com'] }, context(shared)), b.issue({ names: ['reuse-b.example.com'] }, context(shared))]);
    const stored = await shared.list('accounts/');
    assert.equal(stored.length, 1);
    const first = JSON.parse((await shared.load(stored[0]!))!) as { url: string };
    // A third instance (a restart) uses the stored account as is.
    await pebbleIssuer({ email: 'reuse@example.com' }).issue({ names: ['reuse-c.example.com'] }, context(shared));
    const again = JSON.parse((await shared.load(stored[0]!))!) as { url: string };
    assert.equal(again.url, first.url);
    assert.equal(pebble!.accountCount(), accountsBefore + 1);
  });

  it('two processes starting together on one file storage register one account', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'certstate-acme-procs-'));
    const files = fileStorage(dir);
    storages.add(files); // the VA-facing servers read the children's tokens from here
    const before = pebble!.accountCount();
    const startAt = Date.now() + 2500;
    const child = (name: string) =>
      new Promise<void>((resolve, reject) => {
        const script = `
          import { acmeIssuer } from ${JSON.stringify(new URL('../src/adapters/issuers/acme.ts', import.meta.url).pathname)};
          import { fileStorage } from ${JSON.stringify(new URL('../src/adapters/storage/file.ts', import.meta.url).pathname)};
          import pino from 'pino';
          // Both children start their attempt at the same instant, past their start-up.
          await new Promise((r) => setTimeout(r, Number(process.env.START_AT) - Date.now()));
          const issuer = acmeIssuer({ directoryUrl: process.env.DIR, email: 'procs@example.com', agreeToTerms: true, caBundle: process.env.CA_PEM, challenges: ['http-01'] });
          await issuer.issue({ names: [process.env.NAME] }, { storage: fileStorage(process.env.DATA), signal: new AbortController().signal, logger: pino({ level: 'silent' }), now: Date.now });`;
        const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
          cwd: new URL('..', import.meta.url).pathname,
          env: { ...process.env, DIR: pebble!.directoryUrl, CA_PEM: pebble!.caBundlePem, DATA: dir, NAME: name, START_AT: String(startAt) },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
        proc.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child for ${name} exited ${code}: ${stderr}`))));
      });
    try {
      await Promise.all([child('proc-a.example.com'), child('proc-b.example.com')]);
      assert.equal(pebble!.accountCount(), before + 1);
      assert.equal((await files.list('accounts/')).length, 1);
    } finally {
      storages.delete(files);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the account key in file storage with mode 0600', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'certstate-acme-file-'));
    try {
      const files = fileStorage(dir);
      await pebbleIssuer({ email: 'file@example.com' }).issue({ names: ['file.example.com'] }, context(files));
      const [key] = await files.list('accounts/');
      assert.ok(key);
      // Written fenced (under the account lock): a version file named by its fencing token.
      const versions = join(dir, `${key}~v`);
      const [version] = readdirSync(versions);
      assert.ok(version);
      assert.equal(statSync(join(versions, version)).mode & 0o777, 0o600);
      assert.match(readFileSync(join(versions, version), 'utf8'), /PRIVATE KEY/);
      assert.match((await files.load(key))!, /PRIVATE KEY/);
      await files.close?.();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('re-registers (once) when the CA no longer knows the stored account', async () => {
    const shared = memoryStorage();
    const issuer = pebbleIssuer({ email: 'stale@example.com' });
    await issuer.issue({ names: ['stale-1.example.com'] }, context(shared));
    const [key] = await shared.list('accounts/');
    const stored = JSON.parse((await shared.load(key!))!) as { url: string };
    // Point the stored account at a URL Pebble never issued (as after a CA reset).
    await shared.store(key!, JSON.stringify({ ...stored, url: stored.url.replace(/[^/]+$/, 'ffffffffffffffff') }));
    await pebbleIssuer({ email: 'stale@example.com' }).issue({ names: ['stale-2.example.com'] }, context(shared));
    const repaired = JSON.parse((await shared.load(key!))!) as { url: string };
    assert.equal(repaired.url, stored.url, 'same key → the CA returns the same account');
  });

  it('honours preferredChain among Pebble\'s alternate chains', async () => {
    const alternateRoot = new X509Certificate(await pebble!.rootsPem(1));
    const preferred = /CN=(.*)/.exec(alternateRoot.subject)![1]!;
    const bundle = await pebbleIssuer({ preferredChain: preferred }).issue({ names: ['chain.example.com'] }, context(storage));
    assertChainVerifies(bundle, alternateRoot.toString(), ['chain.example.com']);
    const plain = await pebbleIssuer().issue({ names: ['chain-default.example.com'] }, context(storage));
    assertChainVerifies(plain, rootPem, ['chain-default.example.com']);
  });

  it('issues with each key type', async () => {
    for (const [keyType, expected] of [['P-384', 'ec'], ['RSA-2048', 'rsa']] as const) {
      const bundle = await pebbleIssuer({ keyType }).issue({ names: [`${keyType.toLowerCase()}.keys.example.com`] }, context(storage));
      const leaf = assertChainVerifies(bundle, rootPem, [`${keyType.toLowerCase()}.keys.example.com`]);
      assert.equal(leaf.publicKey.asymmetricKeyType, expected);
    }
  });

  it('stops at once when the signal aborts, and still cleans up', async () => {
    // Aborted before starting: no request at all.
    const before = pebble!.orderCount();
    await assert.rejects(pebbleIssuer().issue({ names: ['abort-0.example.com'] }, context(storage, AbortSignal.abort())), { name: 'AbortError' });
    assert.equal(pebble!.orderCount(), before);

    // Aborted right after the DNS record was published.
    const controller = new AbortController();
    const { provider, calls } = spyProvider(challtestsrvDnsProvider(pebble!.challtestsrv.url), () => controller.abort());
    await assert.rejects(pebbleIssuer({ challenges: ['dns-01'], dnsProvider: provider }).issue({ names: ['abort-1.example.com'] }, context(storage, controller.signal)), { name: 'AbortError' });
    assert.deepEqual(calls, ['set _acme-challenge.abort-1.example.com', 'remove _acme-challenge.abort-1.example.com']);

    // Aborted while sleeping between polls: the sleep is cut short.
    brokenHttpHosts.add('abort-2.example.com'); // keeps the authorization from settling fast
    const slow = new AbortController();
    const started = Date.now();
    const attempt = pebbleIssuer({ challenges: ['http-01'], pollInitialMs: 5000 }).issue({ names: ['abort-2.example.com'] }, context(storage, slow.signal));
    while ((await storage.list('challenges/http-01/')).length === 0) await new Promise((r) => setTimeout(r, 5));
    slow.abort();
    await assert.rejects(attempt, { name: 'AbortError' });
    brokenHttpHosts.delete('abort-2.example.com');
    assert.ok(Date.now() - started < 2000, 'did not wait for the 5 s poll');
    assert.deepEqual(await storage.list('challenges/'), []);
  });

  it('issues 10 sequential HTTP-01 certificates on one warm account (their median time is reported; bench:issue holds the bar)', async () => {
    const issuer = pebbleIssuer({ challenges: ['http-01'] });
    await issuer.issue({ names: ['warm.bench.example.com'] }, context(storage)); // account + connection warm
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      await issuer.issue({ names: [`n${i}.bench.example.com`] }, context(storage));
      times.push(performance.now() - started);
    }
    const m = median(times);
    console.log(`# HTTP-01 issuance against Pebble (VA_NOSLEEP): median ${m.toFixed(1)} ms, all [${times.map((t) => t.toFixed(0)).join(', ')}] ms`);
    assert.equal(times.length, 10);
  });
});

describe('acmeIssuer against Pebble rejecting half of all nonces', { skip }, () => {
  let noisy: PebbleHandle;
  before(async () => {
    noisy = (await startPebble({ httpPort, tlsPort, nonceReject: 50 }))!;
  });
  after(() => noisy?.stop());

  it('still issues (badNonce retried with the nonce from the error response)', async () => {
    const issuer = acmeIssuer({ directoryUrl: noisy.directoryUrl, agreeToTerms: true, caBundle: noisy.caBundlePem, challenges: ['http-01'] });
    const root = await noisy.rootsPem();
    for (let i = 0; i < 3; i++) {
      const names = [`nonce${i}.example.com`];
      assertChainVerifies(await issuer.issue({ names }, context(storage)), root, names);
    }
    assert.match(noisy.logs(), /reject 50% of good nonces/);
  });
});

describe('acmeIssuer with External Account Binding required', { skip }, () => {
  const kid = 'kid-1';
  const hmacKey = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W';
  let eabPebble: PebbleHandle;
  before(async () => {
    eabPebble = (await startPebble({ httpPort, tlsPort, externalAccountBindingRequired: true, externalAccountMACKeys: { [kid]: hmacKey } }))!;
  });
  after(() => eabPebble?.stop());
  const issuerWith = (externalAccountBinding?: { kid: string; hmacKey: string }) =>
    acmeIssuer({ directoryUrl: eabPebble.directoryUrl, email: 'eab@example.com', agreeToTerms: true, caBundle: eabPebble.caBundlePem, ...(externalAccountBinding ? { externalAccountBinding } : {}) });

  it('creates the account with EAB and issues', async () => {
    const s = memoryStorage();
    const names = ['eab.example.com'];
    assertChainVerifies(await issuerWith({ kid, hmacKey }).issue({ names }, context(s)), await eabPebble.rootsPem(), names);
    assert.equal((await s.list('accounts/')).length, 1);
    assert.equal(eabPebble.accountCount(), 1);
  });

  it('without EAB → AccountError, no account attempted', async () => {
    const before = eabPebble.accountCount();
    await assert.rejects(issuerWith().issue({ names: ['no-eab.example.com'] }, context(memoryStorage())), (e: unknown) => {
      assert.ok(e instanceof AccountError, String(e));
      assert.equal(e.problemType, `${ACME}externalAccountRequired`);
      return true;
    });
    assert.equal(eabPebble.accountCount(), before);
  });

  it('with a wrong HMAC key → AccountError from the CA, and the key is never in the error', async () => {
    const wrong = 'c2VjcmV0LWhtYWMta2V5LXRoYXQtbXVzdC1ub3QtbGVhay1hbnl3aGVyZQ';
    const s = memoryStorage();
    await assert.rejects(issuerWith({ kid, hmacKey: wrong }).issue({ names: ['bad-eab.example.com'] }, context(s)), (e: unknown) => {
      assert.ok(e instanceof AccountError, String(e));
      assert.equal(e.status, 403);
      assert.match(e.detail ?? '', /external account binding/);
      const text = JSON.stringify({ message: e.message, detail: e.detail, code: e.code, stack: e.stack });
      assert.ok(!text.includes(wrong) && !text.includes(hmacKey), 'no HMAC key in the error');
      return true;
    });
    assert.deepEqual(await s.list('accounts/'), []);
  });
});

// ─── Stub CAs: what Pebble 2.4 cannot do ──────────────────────────────────

interface StubRequest {
  method: string;
  path: string;
  payload?: Record<string, unknown>;
  /** The JWS's nonce (signed requests). */
  nonce?: string;
  /** The Replay-Nonce the stub answered with. */
  answeredNonce: string;
}

/**
 * A minimal ACME server over plain HTTP: directory, nonces, accounts, and an
 * `order` behaviour chosen per test. It does not check signatures; it checks
 * what the client sends and how often.
 */
type StubAnswer = { status: number; headers?: Record<string, string>; body?: unknown };

async function stubCa(
  onOrder: (payload: Record<string, unknown>, n: number, base: string) => StubAnswer,
  meta: Record<string, unknown> = {},
  extra: Record<string, unknown> | ((base: string) => Record<string, unknown>) = {},
  routes: Record<string, (base: string) => StubAnswer> = {},
) {
  const requests: StubRequest[] = [];
  let nonce = 0;
  let orders = 0;
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      let payload: Record<string, unknown> | undefined;
      let jwsNonce: string | undefined;
      if (raw) {
        const jws = JSON.parse(raw) as { payload: string; protected: string };
        payload = jws.payload ? (JSON.parse(Buffer.from(jws.payload, 'base64url').toString()) as Record<string, unknown>) : undefined;
        jwsNonce = (JSON.parse(Buffer.from(jws.protected, 'base64url').toString()) as { nonce?: string }).nonce;
      }
      const answeredNonce = `nonce-${++nonce}`;
      requests.push({ method: req.method!, path: req.url!, ...(payload ? { payload } : {}), ...(jwsNonce ? { nonce: jwsNonce } : {}), answeredNonce });
      res.setHeader('replay-nonce', answeredNonce);
      const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.url === '/dir') return json(200, { newNonce: `${base}/nonce`, newAccount: `${base}/account`, newOrder: `${base}/order`, meta, ...(typeof extra === 'function' ? extra(base) : extra) });
      if (req.url === '/nonce') return res.end();
      if (req.url === '/account') return json(201, { status: 'valid' }, { location: `${base}/account/1` });
      if (req.url === '/order') {
        const answer = onOrder(payload ?? {}, ++orders, base);
        return json(answer.status, answer.body ?? {}, answer.headers);
      }
      const route = routes[req.url!.replace(/\?.*$/, '')];
      if (route) {
        const answer = route(base);
        return json(answer.status, answer.body ?? {}, answer.headers);
      }
      if (req.url === '/hang') return; // never answers
      json(404, { type: `${ACME}malformed`, detail: 'no such resource' });
    });
  });
  const port = await listen(server);
  return { directoryUrl: `http://127.0.0.1:${port}/dir`, base: `http://127.0.0.1:${port}`, requests, orderRequests: () => requests.filter((r) => r.path === '/order'), close: () => close(server) };
}

const stubIssuer = (directoryUrl: string, extra: Partial<AcmeIssuerOptions> = {}) => acmeIssuer({ directoryUrl, agreeToTerms: true, ...extra });

describe('acmeIssuer error mapping and protocol details (stub CA)', () => {
  it('429 with Retry-After seconds → AcmeRateLimitedError.retryAfter, and no retry of its own', async () => {
    const ca = await stubCa(() => ({ status: 429, headers: { 'retry-after': '120' }, body: { type: `${ACME}rateLimited`, detail: 'too many certificates already issued' } }));
    try {
      const started = Date.now();
      await assert.rejects(stubIssuer(ca.directoryUrl).issue({ names: ['rl.example.com'] }, context(memoryStorage())), (e: unknown) => {
        assert.ok(e instanceof AcmeRateLimitedError, String(e));
        assert.equal(e.code, 'ERR_ACME_RATE_LIMITED');
        assert.equal(e.problemType, `${ACME}rateLimited`);
        assert.equal(e.detail, 'too many certificates already issued');
        assert.ok(e.retryAfter! >= started + 120_000 && e.retryAfter! <= Date.now() + 120_000, String(e.retryAfter));
        return true;
      });
      assert.equal(ca.orderRequests().length, 1, 'acme-client\'s axios retries are not in the path');
      // …and its module-global axios settings were left alone for other users.
      assert.deepEqual((acmeAxios.defaults as unknown as { acmeSettings: unknown }).acmeSettings, { httpChallengePort: 80, httpsChallengePort: 443, tlsAlpnChallengePort: 443, retryMaxAttempts: 5, retryDefaultDelay: 5 });
    } finally {
      await ca.close();
    }
  });

  it('429 with Retry-After as an HTTP date, and 503 → retryAfter, typed, one request each', async () => {
    const date = new Date(Date.now() + 3_600_000);
    date.setMilliseconds(0);
    const ca = await stubCa((_p, n) =>
      n === 1
        ? { status: 429, headers: { 'retry-after': date.toUTCString() }, body: { type: `${ACME}rateLimited`, detail: 'slow down' } }
        : { status: 503, headers: { 'retry-after': '30' }, body: { type: `${ACME}serverInternal`, detail: 'maintenance' } },
    );
    try {
      const issuer = stubIssuer(ca.directoryUrl);
      await assert.rejects(issuer.issue({ names: ['rl.example.com'] }, context(memoryStorage())), (e: unknown) => {
        assert.ok(e instanceof AcmeRateLimitedError);
        assert.equal(e.retryAfter, date.getTime());
        return true;
      });
      await assert.rejects(issuer.issue({ names: ['rl.example.com'] }, context(memoryStorage())), (e: unknown) => {
        assert.ok(e instanceof AcmeError && !(e instanceof AcmeRateLimitedError));
        assert.equal(e.status, 503);
        assert.equal(e.problemType, `${ACME}serverInternal`);
        assert.ok(e.retryAfter! > Date.now() + 25_000);
        return true;
      });
      assert.equal(ca.orderRequests().length, 2);
    } finally {
      await ca.close();
    }
  });

  it('sends profile (when advertised) and replaces (when ARI is), and orders once without replaces after alreadyReplaced', async () => {
    const ca = await stubCa(
      (_p, n) =>
        n === 1
          ? { status: 409, body: { type: `${ACME}alreadyReplaced`, detail: 'already replaced' } }
          : { status: 400, body: { type: `${ACME}rejectedIdentifier`, detail: 'stop here' } },
      { profiles: { shortlived: 'six days' } },
      { renewalInfo: 'http://127.0.0.1:1/renewal-info' },
    );
    try {
      await assert.rejects(
        stubIssuer(ca.directoryUrl, { profile: 'shortlived' }).issue({ names: ['ari.example.com'], replaces: 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE' }, context(memoryStorage())),
        (e: unknown) => e instanceof AcmeError && e.problemType === `${ACME}rejectedIdentifier`,
      );
      const [first, second] = ca.orderRequests();
      assert.equal(ca.orderRequests().length, 2, 'exactly one retry, no loop');
      assert.equal(first!.payload!.profile, 'shortlived');
      assert.equal(first!.payload!.replaces, 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE');
      assert.equal(second!.payload!.replaces, undefined);
      assert.deepEqual(first!.payload!.identifiers, [{ type: 'dns', value: 'ari.example.com' }]);
    } finally {
      await ca.close();
    }
  });

  it('carries replay nonces over to the next attempt: one newNonce request for two attempts, each nonce used once', async () => {
    const ca = await stubCa(() => ({ status: 400, body: { type: `${ACME}malformed`, detail: 'stop' } }));
    try {
      const issuer = stubIssuer(ca.directoryUrl);
      const storage = memoryStorage();
      await assert.rejects(issuer.issue({ names: ['n1.example.com'] }, context(storage)), AcmeError);
      await assert.rejects(issuer.issue({ names: ['n2.example.com'] }, context(storage)), AcmeError);
      assert.equal(ca.requests.filter((r) => r.path === '/nonce').length, 1, 'the second attempt starts with a nonce from the first one\'s answers');
      const [first, second] = ca.orderRequests();
      assert.equal(second!.nonce, first!.answeredNonce, 'the newest nonce: the first attempt\'s last answer');
      const used = ca.requests.flatMap((r) => (r.nonce ? [r.nonce] : []));
      assert.equal(new Set(used).size, used.length, 'no nonce signed twice');
    } finally {
      await ca.close();
    }
  });

  /**
   * A stub order with one pending HTTP-01 authorization; `fetchAfterMs` after the challenge POST the
   * stub's "VA" fetches the token through the HTTP-01 handler, and the authorization turns valid
   * `validAfterMs` after that fetch. Finalize answers an error: the test is about the authorization.
   */
  async function fetchingCa(fetchAfterMs: number, validAfterMs: number) {
    const storage = memoryStorage();
    const handlerServer = http.createServer(createHttpChallengeHandler(storage));
    const handlerPort = await listen(handlerServer);
    let challengedAt: number | undefined;
    let fetchedAt: number | undefined;
    const authzPolls: number[] = [];
    const ca = await stubCa(
      (_p, _n, base) => ({ status: 201, headers: { location: `${base}/order/1` }, body: { status: 'pending', identifiers: [{ type: 'dns', value: 'early.example.com' }], authorizations: [`${base}/authz/1`], finalize: `${base}/finalize` } }),
      {},
      {},
      {
        '/authz/1': (base) => {
          if (challengedAt !== undefined) authzPolls.push(Date.now() - challengedAt);
          const valid = fetchedAt !== undefined && Date.now() >= fetchedAt + validAfterMs;
          return { status: 200, body: { status: valid ? 'valid' : 'pending', identifier: { type: 'dns', value: 'early.example.com' }, challenges: [{ type: 'http-01', url: `${base}/chal/1`, token: 'tok-early', status: 'pending' }] } };
        },
        '/chal/1': () => {
          challengedAt = Date.now();
          setTimeout(() => {
            http.get(`http://127.0.0.1:${handlerPort}/.well-known/acme-challenge/tok-early`, (res) => {
              res.resume();
              res.on('end', () => (fetchedAt = Date.now()));
            });
          }, fetchAfterMs);
          return { status: 200, body: { status: 'processing' } };
        },
        '/finalize': () => ({ status: 400, body: { type: `${ACME}malformed`, detail: 'stop here' } }),
      },
    );
    return { ca, storage, authzPolls, close: async () => Promise.all([ca.close(), close(handlerServer)]) };
  }

  it('looks at the authorization right after this process answered the CA\'s HTTP-01 fetch, not after pollInitialMs', async () => {
    const stub = await fetchingCa(20, 0);
    try {
      const issuer = stubIssuer(stub.ca.directoryUrl, { challenges: ['http-01'], pollInitialMs: 60_000 });
      // Bounded far below pollInitialMs: without the notice the first look would come after a minute.
      const outcome = await Promise.race([
        issuer.issue({ names: ['early.example.com'] }, context(stub.storage)).then(() => 'issued', (e: unknown) => e),
        new Promise((resolve) => setTimeout(() => resolve('still waiting after 15 s'), 15_000).unref()),
      ]);
      assert.ok(outcome instanceof AcmeError && outcome.detail === 'stop here', `reached finalize: ${String(outcome)}`);
      assert.equal(stub.authzPolls.length, 1, 'one look, after the fetch: valid');
      assert.equal(watchedTokens(), 0, 'no watch left behind');
    } finally {
      await stub.close();
    }
  });

  it('an early look that finds the authorization pending leaves the regular schedule as it was', async () => {
    const stub = await fetchingCa(20, 150);
    try {
      const issuer = stubIssuer(stub.ca.directoryUrl, { challenges: ['http-01'], pollInitialMs: 1000 });
      await assert.rejects(issuer.issue({ names: ['early.example.com'] }, context(stub.storage)), (e: unknown) => e instanceof AcmeError && e.detail === 'stop here');
      const [early, regular, ...more] = stub.authzPolls;
      assert.equal(more.length, 0, String(stub.authzPolls));
      assert.ok(early! < 900, `the early look, after the fetch (${early} ms)`);
      // Timers never fire early; a schedule moved on by the early look would look at ~2,000 ms.
      assert.ok(regular! >= 990 && regular! < 1900, `the regular look at pollInitialMs (${regular} ms)`);
      assert.equal(watchedTokens(), 0);
    } finally {
      await stub.close();
    }
  });

  it('leaves out profile and replaces where the CA does not support them', async () => {
    const ca = await stubCa(() => ({ status: 400, body: { type: `${ACME}malformed`, detail: 'stop' } }));
    try {
      await assert.rejects(stubIssuer(ca.directoryUrl, { profile: 'shortlived' }).issue({ names: ['p.example.com'], replaces: 'x.y' }, context(memoryStorage())), AcmeError);
      const [order] = ca.orderRequests();
      assert.equal(order!.payload!.profile, undefined);
      assert.equal(order!.payload!.replaces, undefined);
    } finally {
      await ca.close();
    }
  });

  it('an order stuck in processing ends in a poll timeout carrying the CA\'s Retry-After, without polling early', async () => {
    let polls = 0;
    const ca = await stubCa(
      (_payload, _n, base) => ({ status: 201, headers: { location: `${base}/order/1` }, body: { status: 'ready', identifiers: [{ type: 'dns', value: 'stuck.example.com' }], authorizations: [], finalize: `${base}/finalize` } }),
      {},
      {},
      {
        '/finalize': () => ({ status: 200, body: { status: 'processing' } }),
        '/order/1': () => {
          polls++;
          return { status: 200, headers: { 'retry-after': '2' }, body: { status: 'processing' } };
        },
      },
    );
    try {
      const issuer = stubIssuer(ca.directoryUrl, { pollTimeoutMs: 1000 });
      const started = Date.now();
      await assert.rejects(
        issuer.issue({ names: ['stuck.example.com'] }, context(memoryStorage())),
        (e: unknown) => {
          assert.ok(e instanceof AcmeError, String(e));
          assert.equal(e.code, 'ERR_ACME_POLL_TIMEOUT');
          assert.ok(e.retryAfter! >= Date.now() + 500, 'retryAfter from the CA\'s Retry-After');
          return true;
        },
      );
      assert.equal(polls, 1, 'Retry-After (2 s) beyond the 1 s budget: no second poll');
      assert.ok(Date.now() - started < 900);
    } finally {
      await ca.close();
    }
  });

  it('ARI: reads the suggested window, clamps Retry-After, treats invalid windows as no answer', async () => {
    const windows: Record<string, StubAnswer> = {
      good: { status: 200, headers: { 'retry-after': '21600' }, body: { suggestedWindow: { start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' }, explanationURL: 'https://ca.example/why' } },
      short: { status: 200, headers: { 'retry-after': '5' }, body: { suggestedWindow: { start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' } } },
      long: { status: 200, headers: { 'retry-after': String(30 * 86400) }, body: { suggestedWindow: { start: '2030-01-01T00:00:00Z', end: '2030-01-02T00:00:00Z' } } },
      inverted: { status: 200, body: { suggestedWindow: { start: '2030-01-02T00:00:00Z', end: '2030-01-01T00:00:00Z' } } },
      garbage: { status: 200, body: { suggestedWindow: { start: 'soon', end: 42 } } },
    };
    const routes = Object.fromEntries(Object.entries(windows).map(([id, answer]) => [`/ari/${id}`, () => answer]));
    const ca = await stubCa(() => ({ status: 500 }), {}, (base) => ({ renewalInfo: `${base}/ari/` }), routes);
    try {
      const issuer = stubIssuer(ca.directoryUrl);
      const meta = (ariCertId: string | undefined) => ({ fingerprint: '', serial: '', names: [], notBefore: 0, notAfter: 0, issuer: '', issuerId: issuer.id, ...(ariCertId ? { ariCertId } : {}) });
      const ctx = context(memoryStorage());
      const now = Date.now();
      const good = await issuer.renewalInfo!(meta('good'), ctx);
      assert.equal(good!.start, Date.parse('2030-01-01T00:00:00Z'));
      assert.equal(good!.end, Date.parse('2030-01-02T00:00:00Z'));
      assert.ok(Math.abs(good!.retryAfter! - (now + 21600_000)) < 5000);
      assert.equal(good!.explanationUrl, 'https://ca.example/why');
      assert.ok(Math.abs((await issuer.renewalInfo!(meta('short'), ctx))!.retryAfter! - (now + 60_000)) < 5000, 'clamped up to 1 min');
      assert.ok(Math.abs((await issuer.renewalInfo!(meta('long'), ctx))!.retryAfter! - (now + 86_400_000)) < 5000, 'clamped down to 1 day');
      assert.equal(await issuer.renewalInfo!(meta('inverted'), ctx), undefined);
      assert.equal(await issuer.renewalInfo!(meta('garbage'), ctx), undefined);
      assert.equal(await issuer.renewalInfo!(meta(undefined), ctx), undefined);
      // A CA without ARI in its directory: no request, no answer.
      const noAri = await stubCa(() => ({ status: 500 }));
      try {
        assert.equal(await stubIssuer(noAri.directoryUrl).renewalInfo!(meta('good'), ctx), undefined);
      } finally {
        await noAri.close();
      }
    } finally {
      await ca.close();
    }
  });

  it('connection refused → AcmeNetworkError; a CA that never answers → AcmeTimeoutError within requestTimeoutMs', async () => {
    const port = await freePort();
    await assert.rejects(stubIssuer(`http://127.0.0.1:${port}/dir`).issue({ names: ['x.example.com'] }, context(memoryStorage())), (e: unknown) => {
      assert.ok(e instanceof AcmeNetworkError && !(e instanceof AcmeTimeoutError), String(e));
      assert.match(e.message, /ECONNREFUSED/);
      return true;
    });
    const ca = await stubCa(() => ({ status: 500 }));
    try {
      const started = Date.now();
      await assert.rejects(stubIssuer(`${ca.base}/hang`, { requestTimeoutMs: 200 }).issue({ names: ['x.example.com'] }, context(memoryStorage())), AcmeTimeoutError);
      assert.ok(Date.now() - started < 1500);
    } finally {
      await ca.close();
    }
  });

  it('refuses bad configuration with ConfigError, never echoing the EAB key', () => {
    assert.throws(() => acmeIssuer({ directoryUrl: 'https://ca.example/dir', agreeToTerms: false }), ConfigError);
    assert.throws(() => acmeIssuer({ directoryUrl: 'not a url', agreeToTerms: true }), ConfigError);
    assert.throws(() => acmeIssuer({ directoryUrl: 'https://ca.example/dir', agreeToTerms: true, challenges: ['dns-01'] }), ConfigError);
    assert.throws(
      () => acmeIssuer({ directoryUrl: 'https://ca.example/dir', agreeToTerms: true, externalAccountBinding: { kid: 'k', hmacKey: 'secret value!' } }),
      (e: unknown) => e instanceof ConfigError && !e.message.includes('secret value'),
    );
    assert.equal(acmeIssuer({ directoryUrl: 'https://ca.example/dir', agreeToTerms: true }).id, 'acme:https://ca.example/dir');
  });
});

// ─── The challenge responders on their own ────────────────────────────────

describe('HTTP-01 handler', () => {
  it('answers stored tokens, 404s unknown or malformed ones, and passes everything else on', async () => {
    const s = memoryStorage();
    await s.store(keys.http01('tok_en-1'), 'tok_en-1.thumb');
    const fallback: string[] = [];
    const server = http.createServer(
      createHttpChallengeHandler(s, (req, res) => {
        fallback.push(req.url!);
        res.end('app');
      }),
    );
    const port = await listen(server);
    const get = async (path: string, method = 'GET') => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
      return { status: res.status, body: await res.text() };
    };
    try {
      assert.deepEqual(await get('/.well-known/acme-challenge/tok_en-1'), { status: 200, body: 'tok_en-1.thumb' });
      assert.deepEqual(await get('/.well-known/acme-challenge/tok_en-1?x=1'), { status: 200, body: 'tok_en-1.thumb' });
      assert.equal((await get('/.well-known/acme-challenge/tok_en-1', 'HEAD')).status, 200);
      assert.equal((await get('/.well-known/acme-challenge/unknown')).status, 404);
      assert.equal((await get('/.well-known/acme-challenge/..%2Faccounts')).status, 404);
      assert.equal((await get('/.well-known/acme-challenge/a.b')).status, 404);
      assert.equal((await get(`/.well-known/acme-challenge/${'a'.repeat(257)}`)).status, 404);
      assert.equal((await get(`/.well-known/acme-challenge/${'a'.repeat(250)}`)).status, 404); // valid token, longer than a storage segment
      assert.equal((await get('/.well-known/acme-challenge/')).status, 404);
      assert.deepEqual(await get('/app/page'), { status: 200, body: 'app' });
      assert.equal((await get('/.well-known/acme-challenge/tok_en-1', 'POST')).body, 'app');
      assert.deepEqual(fallback, ['/app/page', '/.well-known/acme-challenge/tok_en-1']);
    } finally {
      await close(server);
    }
  });

  it('works as Express-style middleware (calls next for other requests) and 404s without a fallback', async () => {
    const handler = createHttpChallengeHandler(memoryStorage());
    let nexted = 0;
    const server = http.createServer((req, res) => {
      if (req.url === '/mw') {
        handler(req, res, () => {
          nexted++;
          res.end('next');
        });
      } else handler(req, res);
    });
    const port = await listen(server);
    try {
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/mw`)).text(), 'next');
      assert.equal(nexted, 1);
      assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
    } finally {
      await close(server);
    }
  });
});

describe('TLS-ALPN-01 responder inside a normal TLS server', () => {
  const s = memoryStorage();
  const responder = createTlsAlpnResponder(s);
  const appSni: string[] = [];
  const server = tls.createServer(
    {
      ALPNCallback: responder.ALPNCallback,
      SNICallback: responder.wrapSNICallback((name, cb) => {
        appSni.push(name);
        cb(null, appContext);
      }),
    },
    (socket) => socket.end(),
  );
  server.on('tlsClientError', () => undefined);
  let port: number;
  before(async () => {
    port = await listen(server);
    await s.store(keys.tlsAlpn01('pending.example.com'), 'token.thumbprint');
  });
  after(() => close(server));

  function connect(options: tls.ConnectionOptions): Promise<{ alpn: string | false; cert: X509Certificate } | { error: string }> {
    return new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options }, () => {
        resolve({ alpn: socket.alpnProtocol ?? false, cert: socket.getPeerX509Certificate()! });
        socket.destroy();
      });
      socket.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    });
  }

  it('answers acme-tls/1 with the RFC 8737 certificate (TLS 1.3: ALPN runs before SNI)', async () => {
    appSni.length = 0;
    const r = await connect({ servername: 'pending.example.com', ALPNProtocols: ['acme-tls/1'] });
    assert.ok('alpn' in r, JSON.stringify(r));
    assert.equal(r.alpn, 'acme-tls/1');
    assert.match(r.cert.subjectAltName ?? '', /DNS:pending\.example\.com/);
    assert.deepEqual(appSni, [], 'the application SNI callback is not consulted');
  });

  it('gives normal clients the application\'s certificate and http/1.1, whatever they offer first', async () => {
    appSni.length = 0;
    const r = await connect({ servername: 'pending.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
    assert.ok('alpn' in r);
    assert.equal(r.alpn, 'http/1.1');
    assert.match(r.cert.subject, /CN=app\.test/);
    const noAlpn = await connect({ servername: 'app.example.com' });
    assert.ok('alpn' in noAlpn);
    assert.equal(noAlpn.alpn, false);
    assert.deepEqual(appSni, ['pending.example.com', 'app.example.com']);
  });

  it('refuses the handshake rather than present a wrong certificate', async () => {
    // No pending challenge for the name.
    assert.ok('error' in (await connect({ servername: 'nothing.example.com', ALPNProtocols: ['acme-tls/1'] })));
    // TLS 1.2: SNI runs before ALPN, too late to switch certificates.
    assert.ok('error' in (await connect({ servername: 'pending.example.com', ALPNProtocols: ['acme-tls/1'], maxVersion: 'TLSv1.2' })));
    // No SNI at all.
    assert.ok('error' in (await connect({ ALPNProtocols: ['acme-tls/1'] })));
    // No protocol in common: Node's no_application_protocol alert, as with ALPNProtocols.
    assert.ok('error' in (await connect({ servername: 'app.example.com', ALPNProtocols: ['spdy/3'] })));
  });

  it('documents the Node trap: a default certificate of another key type shadows the (RSA) challenge certificate', async () => {
    // Node's SNI switch (UseSNIContext) only *adds* the SNI context's
    // certificate to the connection, in the slot of its key type; a default
    // ECDSA certificate stays in its slot and wins with clients preferring
    // ECDSA. So a server answering TLS-ALPN-01 must have no default key/cert.
    const shadowed = tls.createServer({ ...appCert, ALPNCallback: responder.ALPNCallback, SNICallback: responder.wrapSNICallback() }, (socket) => socket.end());
    shadowed.on('tlsClientError', () => undefined);
    const shadowedPort = await listen(shadowed);
    try {
      const cert = await new Promise<X509Certificate>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: shadowedPort, servername: 'pending.example.com', ALPNProtocols: ['acme-tls/1'], rejectUnauthorized: false }, () => {
          resolve(socket.getPeerX509Certificate()!);
          socket.destroy();
        });
        socket.on('error', reject);
      });
      assert.match(cert.subject, /CN=app\.test/, 'if this fails, Node now replaces the whole certificate set on SNI: the restriction can go');
    } finally {
      await close(shadowed);
    }
  });

  it('offers h2 first when told the server speaks it', async () => {
    const h2 = createTlsAlpnResponder(s, { protocols: ['h2', 'http/1.1'] });
    assert.equal(h2.ALPNCallback.call(undefined, { servername: 'a.example.com', protocols: ['http/1.1', 'h2'] }), 'h2');
    assert.equal(h2.ALPNCallback.call(undefined, { servername: 'a.example.com', protocols: ['http/1.1'] }), 'http/1.1');
    assert.throws(() => createTlsAlpnResponder(s, { protocols: ['acme-tls/1'] }), TypeError);
  });
});

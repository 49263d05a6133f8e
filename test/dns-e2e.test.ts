/**
 * Wildcards end to end against real servers: Pebble's VA resolves through a
 * real BIND 9, and certstate writes the DNS-01 records into BIND with
 * `rfc2136DnsProvider` (TSIG-signed RFC 2136 updates).
 *
 * - One certificate for `example.test` + `*.example.test` straight through
 *   `acmeIssuer().issue()`: both TXT values must stand at
 *   `_acme-challenge.example.test` at once, or Pebble refuses one of them.
 * - Through the engine: the apex and the wildcard as ONE managed certificate
 *   (`names: [['example.test', '*.example.test']]`), one order for both, a
 *   handshake for `a.example.test` (and the apex) verified against Pebble's
 *   root, a renewal, and BIND holding no challenge record afterwards. The
 *   same for a name whose `_acme-challenge` is a CNAME into another zone,
 *   and for an IDN wildcard (`*.bücher.test`).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { rfc2136DnsProvider, type DnsProvider } from '../src/adapters/challenges/dns/index.js';
import { acmeIssuer } from '../src/adapters/issuers/acme.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { startBind } from './helpers/bind.js';
import { startPebble } from './helpers/pebble.js';
import { handshake, startTlsServer } from './helpers/tls.js';

const VALIDITY_S = 14;
const bind = await startBind([
  { name: 'example.test' },
  { name: 'cname.test', records: ['_acme-challenge IN CNAME cname-test.delegated.test.'] },
  { name: 'delegated.test' },
  { name: 'xn--bcher-kva.test' },
  { name: 'wild.test' },
]);
const pebble = bind ? await startPebble({ dnsServer: bind.server, certificateValidityPeriod: VALIDITY_S }) : undefined;
const skip = bind && pebble ? false : 'needs BIND (apt-get install bind9) and Pebble (apt-get install pebble)';
const rootPem = pebble ? await pebble.rootsPem(0) : '';

const engines: CertEngine[] = [];
after(async () => {
  for (const engine of engines) await engine.stop();
  await pebble?.stop();
  await bind?.stop();
});

const provider = (): DnsProvider =>
  rfc2136DnsProvider({
    server: bind!.server,
    tsigKey: bind!.key,
    ...bind!.dnsOptions(10_000),
  });

/**
 * The provider, with each record name's first `size` values held at the
 * propagation step until all `size` are set — so attempts that run side by
 * side really do share the record name — and what BIND served then.
 */
function rendezvous(inner: DnsProvider, size: number) {
  const groups = new Map<string, { values: Set<string>; release: () => void; all: Promise<void> }>();
  const group = (fqdn: string) => {
    let g = groups.get(fqdn);
    if (!g) {
      let release!: () => void;
      const all = new Promise<void>((resolve) => (release = resolve));
      g = { values: new Set(), release, all };
      groups.set(fqdn, g);
    }
    return g;
  };
  const seen: string[][] = [];
  const wrapped: DnsProvider = {
    async set(fqdn, value, options) {
      await inner.set(fqdn, value, options);
      const g = group(fqdn);
      g.values.add(value);
      if (g.values.size === size) g.release();
    },
    remove: (fqdn, value, options) => inner.remove(fqdn, value, options),
    async waitForPropagation(fqdn, value, options) {
      await inner.waitForPropagation!(fqdn, value, options);
      const g = group(fqdn);
      await Promise.race([g.all, new Promise((r) => setTimeout(r, 15_000))]);
      seen.push(await bind!.txt(fqdn));
    },
  };
  return { provider: wrapped, seen };
}

const issuer = (dnsProvider: DnsProvider) =>
  acmeIssuer({ directoryUrl: pebble!.directoryUrl, email: 'dns@example.test', agreeToTerms: true, caBundle: pebble!.caBundlePem, challenges: ['dns-01'], dnsProvider });

async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function sans(pem: string): string[] {
  return (new X509Certificate(pem).subjectAltName ?? '').split(', ').map((s) => s.replace(/^DNS:/, '')).sort();
}

describe('DNS-01 with RFC 2136 into BIND, validated by Pebble', { skip }, () => {
  it('issues ONE certificate for example.test + *.example.test (both TXT values stand at once), and removes both records', async () => {
    const spy = rendezvous(provider(), 2);
    const bundle = await issuer(spy.provider).issue(
      { names: ['example.test', '*.example.test'] },
      { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: memoryStorage(), now: Date.now },
    );
    assert.deepEqual(sans(bundle.certificatePem), ['*.example.test', 'example.test']);
    assert.equal(spy.seen.length, 2);
    for (const values of spy.seen) assert.equal(values.length, 2, `both values at _acme-challenge.example.test while validating: ${JSON.stringify(values)}`);
    assert.deepEqual(await bind!.txt('_acme-challenge.example.test'), [], 'both records removed');
  });

});

// The engine scenarios use separate zones and run side by side (their renewals are waits, not work).
describe('DNS-01 through the engine, RFC 2136 into BIND, validated by Pebble', { skip, concurrency: true }, () => {
  /**
   * Run an engine managing `group` as ONE certificate until it has been
   * obtained and renewed: handshakes for `probe` (a name its wildcard covers)
   * and for the apex verified against Pebble's root, both TXT values standing
   * at once, every record gone from BIND afterwards. `configured`: the
   * names as given to the engine (Unicode), `group` as normalised.
   */
  async function obtainAndRenew(group: string[], recordName: string, challengeHost: string, probe: string, configured: string[] = group) {
    const spy = rendezvous(provider(), 2);
    const acme = issuer(spy.provider);
    const orders: string[][] = [];
    const counted = { ...acme, id: acme.id, issue: (request: Parameters<typeof acme.issue>[0], context: Parameters<typeof acme.issue>[1]) => (orders.push([...request.names]), acme.issue(request, context)) };
    // Pebble's certificates here live VALIDITY_S seconds: usable only without the 10-minute floor before a renewal.
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [counted], names: [configured], handshakeTimeout: 30_000, timing: { minRenewalIntervalMs: 0 } });
    engines.push(engine);
    const renewed: string[] = [];
    engine.on('cert_renewed', (e) => void renewed.push(e.name));
    await engine.start();
    const server = await startTlsServer(engine);
    try {
      const first = await handshake(server.port, probe, rootPem);
      assert.ok(first.ok, `handshake for ${probe} verified against Pebble's root: ${first.ok ? '' : first.error} ${JSON.stringify(engine.status().map((s) => s.lastError))}`);
      const apex = await handshake(server.port, group[0]!, rootPem);
      assert.ok(apex.ok && apex.fingerprint === first.fingerprint, `the apex ${group[0]} is served the same certificate, verified`);
      assert.deepEqual(sans((await engine.getCertificate(probe)).certificatePem), [...group].sort(), 'one certificate with every name');
      const [status] = engine.status();
      assert.equal(engine.status().length, 1, 'one certificate, one name record');
      assert.deepEqual(status?.names, group);
      assert.deepEqual(orders, [group], 'one order carrying every name');
      assert.equal(spy.seen.length, 2, 'one propagation step per authorization');
      for (const values of spy.seen) assert.equal(values.length, 2, `the apex's and the wildcard's values side by side at ${challengeHost}: ${JSON.stringify(values)}`);
      // Renewal at about half the lifetime: one order again, for every name.
      await until(() => renewed.length > 0, 'the certificate renewed', VALIDITY_S * 1000);
      assert.deepEqual(renewed, [group[0]]);
      const second = await handshake(server.port, probe, rootPem);
      assert.ok(second.ok && second.fingerprint !== first.fingerprint, 'the renewed certificate is served');
      assert.deepEqual(orders.at(-1), group, 'the renewal orders every name');
      await engine.stop();
      assert.deepEqual(await bind!.txt(challengeHost), [], `no challenge record left at ${challengeHost}`);
      if (recordName !== challengeHost) assert.deepEqual(await bind!.txt(recordName), [], `nothing at ${recordName}`);
    } finally {
      await server.close();
    }
  }

  it('through the engine: example.test + *.example.test in ONE certificate, a verified handshake for a.example.test, renewal, no record left', async () => {
    await obtainAndRenew(['example.test', '*.example.test'], '_acme-challenge.example.test', '_acme-challenge.example.test', 'a.example.test');
  });

  it('through the engine: _acme-challenge.cname.test is a CNAME into delegated.test; the records are written (and removed) there', async () => {
    await obtainAndRenew(['cname.test', '*.cname.test'], '_acme-challenge.cname.test', 'cname-test.delegated.test', 'www.cname.test');
  });

  it('through the engine: an IDN wildcard, *.bücher.test, with its apex in one certificate', async () => {
    const group = ['xn--bcher-kva.test', '*.xn--bcher-kva.test'];
    await obtainAndRenew(group, '_acme-challenge.xn--bcher-kva.test', '_acme-challenge.xn--bcher-kva.test', 'a.xn--bcher-kva.test', ['bücher.test', '*.bücher.test']);
  });
});

describe('docs/dns.md: the wildcard server example', { skip }, () => {
  it('is examples/dns-wildcard.ts, and it serves https://a.wild.test/ with a certificate Pebble issued through BIND', async () => {
    const root = path.join(import.meta.dirname, '..');
    const doc = await readFile(path.join(root, 'docs/dns.md'), 'utf8');
    const block = /<!-- example:dns-wildcard[^>]*-->\n```ts\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(block, 'docs/dns.md has the example block');
    assert.equal(block, await readFile(path.join(root, 'examples/dns-wildcard.ts'), 'utf8'));

    // The example runs with the default timing: certificates must outlive the 10-minute floor before a
    // renewal (timing.minRenewalIntervalMs), so a Pebble of its own with an hour of validity.
    const hourly = (await startPebble({ dnsServer: bind!.server, certificateValidityPeriod: 3600 }))!;
    const hourlyRoot = await hourly.rootsPem(0);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-dns-example-'));
    await writeFile(path.join(dir, 'ca.pem'), hourly.caBundlePem);
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/dns-wildcard.ts'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        DOMAIN: 'wild.test',
        PORT: '0',
        CERTSTATE_DATA: path.join(dir, 'data'),
        ACME_DIRECTORY_URL: hourly.directoryUrl,
        ACME_CA_BUNDLE: path.join(dir, 'ca.pem'),
        DNS_SERVER: bind!.server,
        TSIG_KEY_NAME: bind!.key.name,
        TSIG_SECRET: bind!.key.secret,
        DNS_RESOLVERS: bind!.server,
        DNS_NAMESERVER_PORT: String(bind!.port),
      },
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => void (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => void (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until(() => /listening on \d+/.test(output) || child.exitCode !== null, 'the example listens', 60_000);
      const port = Number(/listening on (\d+)/.exec(output)?.[1]);
      assert.ok(port > 0, output);
      const body = await new Promise<string>((resolve, reject) => {
        const req = https.get({ host: '127.0.0.1', port, servername: 'a.wild.test', headers: { host: 'a.wild.test' }, ca: hourlyRoot, timeout: 30_000 }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve(text));
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', reject);
      });
      assert.equal(body, 'hello from a.wild.test\n');
      await until(() => output.includes('obtained wild.test'), 'the certificate obtained');
      assert.ok(!output.includes('obtained *.wild.test'), 'ONE certificate for the apex and the wildcard, obtained under the apex');
      assert.deepEqual(await bind!.txt('_acme-challenge.wild.test'), []);
    } finally {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(kill);
      await rm(dir, { recursive: true, force: true });
      await hourly.stop();
    }
  });
});

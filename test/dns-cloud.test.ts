/**
 * The providers for services that cannot be reached from here — Cloudflare
 * and Route 53 through their official SDKs, and acme-dns over its HTTP API —
 * contract-tested: each talks, unchanged, to a local stand-in implementing
 * the documented endpoints it uses (test/helpers/dns-contracts.ts), and runs
 * the provider conformance suite there. Not run against the real services.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { acmeDnsProvider, type AcmeDnsProviderOptions } from '../src/adapters/challenges/dns/acme-dns.js';
import { cloudflareDnsProvider, type CloudflareDnsProviderOptions } from '../src/adapters/challenges/dns/cloudflare.js';
import { route53DnsProvider, type Route53DnsProviderOptions } from '../src/adapters/challenges/dns/route53.js';
import { ConfigError, DnsProviderError } from '../src/errors.js';
import { silentServer } from './helpers/backends.js';
import { capturingLogger, runDnsProviderConformance } from './helpers/dns-conformance.js';
import { startAcmeDnsContract, startCloudflareContract, startRoute53Contract } from './helpers/dns-contracts.js';

const secret = () => randomBytes(30).toString('base64url');
const CF_TOKEN = secret();
const AWS = { accessKeyId: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`, secretAccessKey: secret() };

const cloudflare = await startCloudflareContract(CF_TOKEN, ['example.test', 'other.test']);
const route53 = await startRoute53Contract(AWS.accessKeyId, ['example.test', 'other.test']);
const acmeDns = await startAcmeDnsContract();
const silent = await silentServer();
after(async () => {
  await Promise.all([cloudflare.close(), route53.close(), acmeDns.close(), silent.close()]);
});


/** No DNS to look at behind a stand-in: delegation and propagation off. */
const noDns = { followCname: false, propagation: false } as const;

{
  const log = capturingLogger();
  const options = (extra: Partial<CloudflareDnsProviderOptions> = {}): CloudflareDnsProviderOptions => ({ apiToken: CF_TOKEN, baseUrl: cloudflare.url, logger: log.logger, ...noDns, ...extra });
  runDnsProviderConformance('cloudflare (official SDK → contract server)', async () => ({
    provider: cloudflareDnsProvider(options()),
    zone: 'example.test',
    published: async (fqdn) => cloudflare.txt(fqdn),
    withBadCredentials: () => cloudflareDnsProvider(options({ apiToken: secret() })),
    hanging: () => cloudflareDnsProvider(options({ baseUrl: `http://127.0.0.1:${silent.port}/client/v4`, requestTimeoutMs: 500 })),
    secrets: [CF_TOKEN],
    logs: log.logs,
  }));
}

{
  const log = capturingLogger();
  const options = (extra: Partial<Route53DnsProviderOptions> = {}): Route53DnsProviderOptions => ({ credentials: AWS, endpoint: route53.url, changePollMs: 20, logger: log.logger, ...noDns, ...extra });
  runDnsProviderConformance('route53 (AWS SDK v3 → contract server)', async () => ({
    provider: route53DnsProvider(options()),
    zone: 'example.test',
    published: async (fqdn) => route53.txt(fqdn),
    withBadCredentials: () => route53DnsProvider(options({ credentials: { accessKeyId: 'AKIAWRONGWRONGWRONG0', secretAccessKey: secret() } })),
    hanging: () => route53DnsProvider(options({ endpoint: `http://127.0.0.1:${silent.port}`, requestTimeoutMs: 500 })),
    secrets: [AWS.secretAccessKey],
    logs: log.logs,
  }));
}

{
  const log = capturingLogger();
  const accounts = (domain: string) => acmeDns.accountFor(domain);
  const options = (extra: Partial<AcmeDnsProviderOptions> = {}): AcmeDnsProviderOptions => ({ apiUrl: acmeDns.url, accounts, logger: log.logger, ...noDns, ...extra });
  const passwords: string[] = [];
  runDnsProviderConformance('acme-dns (HTTP API → contract server)', async () => ({
    provider: acmeDnsProvider(options()),
    zone: 'example.test',
    published: async (fqdn) => {
      const domain = fqdn.replace(/^_acme-challenge\./, '');
      passwords.push(acmeDns.accountFor(domain).password);
      return acmeDns.values(domain);
    },
    withBadCredentials: () => acmeDnsProvider(options({ accounts: (domain) => ({ ...acmeDns.accountFor(domain), password: secret() }) })),
    hanging: () => acmeDnsProvider(options({ apiUrl: `http://127.0.0.1:${silent.port}`, requestTimeoutMs: 500 })),
    get secrets() {
      return passwords;
    },
    logs: log.logs,
    cannotDelete: 'acme-dns has no delete; it keeps the two newest values',
  }));
}

describe('cloud providers: what the conformance suite does not cover', () => {
  it('cloudflare finds the zone through the API (the record may be deep below it) and uses only the documented endpoints', async () => {
    const p = cloudflareDnsProvider({ apiToken: CF_TOKEN, baseUrl: cloudflare.url, ...noDns });
    const before = cloudflare.requests.length;
    await p.set('_acme-challenge.a.b.other.test', 'v'.repeat(43));
    assert.deepEqual(cloudflare.txt('_acme-challenge.a.b.other.test'), ['v'.repeat(43)]);
    await p.remove('_acme-challenge.a.b.other.test', 'v'.repeat(43));
    const used = new Set(cloudflare.requests.slice(before).map((r) => r.replace(/[0-9a-f]{32}/g, ':id')));
    assert.deepEqual([...used].sort(), ['DELETE /client/v4/zones/:id/dns_records/:id', 'GET /client/v4/zones', 'GET /client/v4/zones/:id/dns_records', 'POST /client/v4/zones/:id/dns_records']);
    await assert.rejects(p.set('_acme-challenge.elsewhere.invalid', 'v'), (e: unknown) => e instanceof DnsProviderError && e.code === 'ERR_DNS_NO_ZONE');
  });

  it('route53: two values added by two providers (two processes) at once both stand — the losing batch is retried', async () => {
    const name = '_acme-challenge.race.example.test';
    const [a, b] = [route53DnsProvider({ credentials: AWS, endpoint: route53.url, changePollMs: 20, ...noDns }), route53DnsProvider({ credentials: AWS, endpoint: route53.url, changePollMs: 20, ...noDns })];
    await Promise.all([a.set(name, 'a'.repeat(43)), b.set(name, 'b'.repeat(43)), a.set(name, 'c'.repeat(43))]);
    assert.deepEqual(route53.txt(name).sort(), ['a'.repeat(43), 'b'.repeat(43), 'c'.repeat(43)]);
    await Promise.all([a.remove(name, 'a'.repeat(43)), b.remove(name, 'b'.repeat(43))]);
    assert.deepEqual(route53.txt(name), ['c'.repeat(43)]);
    await a.remove(name, 'c'.repeat(43));
    assert.deepEqual(route53.txt(name), []);
    const polls = route53.requests.filter((r) => r.startsWith('GET /2013-04-01/change/'));
    assert.ok(polls.length > 0, 'each change was awaited until INSYNC');
  });

  it('acme-dns: the account is chosen by domain, a wildcard uses its base domain\'s', async () => {
    const p = acmeDnsProvider({ apiUrl: acmeDns.url, accounts: { 'shared.example.test': acmeDns.accountFor('shared.example.test') }, ...noDns });
    await p.set('_acme-challenge.shared.example.test', 'x'.repeat(43));
    assert.deepEqual(acmeDns.values('shared.example.test'), ['x'.repeat(43)]);
    await assert.rejects(p.set('_acme-challenge.unknown.example.test', 'x'.repeat(43)), (e: unknown) => e instanceof DnsProviderError && e.code === 'ERR_DNS_NO_ACCOUNT');
    await assert.rejects(p.set('_acme-challenge.shared.example.test', 'too-short'), (e: unknown) => e instanceof DnsProviderError && e.status === 400 && /bad_txt/.test(e.message));
  });

  it('bad options are ConfigErrors that never echo a credential', () => {
    for (const make of [
      () => cloudflareDnsProvider({ apiToken: '' }),
      () => cloudflareDnsProvider({ apiToken: CF_TOKEN, ttl: 0 }),
      () => route53DnsProvider({ credentials: { accessKeyId: AWS.accessKeyId } as never }),
      () => acmeDnsProvider({ apiUrl: 'http://acme-dns.example.test', accounts: {} }),
      () => acmeDnsProvider({ apiUrl: 'not a url', accounts: {} }),
    ]) {
      assert.throws(make, (e: unknown) => e instanceof ConfigError && !e.message.includes(CF_TOKEN));
    }
  });

  it('the SDKs are optional: no module of certstate/dns imports them at load time', () => {
    const dir = new URL('../src/adapters/challenges/dns/', import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const source = readFileSync(new URL(file, dir), 'utf8');
      for (const line of source.split('\n')) {
        if (/^\s*import\s/.test(line) && /['"](cloudflare|@aws-sdk\/[^'"]+)['"]/.test(line)) assert.match(line, /^\s*import type /, `${file}: ${line}`);
      }
    }
  });
});

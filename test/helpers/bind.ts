/**
 * Test helper: a real BIND 9 (`/usr/sbin/named`, Debian's `bind9`) serving
 * throwaway zones on a free loopback port, with TSIG keys allowed to update
 * them, started for one test file and stopped by its own handle.
 *
 * BIND answers recursive questions from loopback out of its own zones (a
 * root zone of its own included), as the CA's resolver would: Pebble's VA
 * resolves through it. Each zone has `ns.<zone>` as its only name server, at 127.0.0.1 (so the
 * propagation check, told `nameserverPort`, asks this BIND). `txt()` reads
 * what BIND serves through Node's own resolver (c-ares), not through the
 * code under test.
 */
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TsigKey } from '../../src/adapters/challenges/dns/tsig.js';
import { canConnect, findExecutable, freePort, installExitHook, killChild, spawnLogged, waitReady } from './pebble.js';

/** A zone to serve. */
export interface BindZoneSpec {
  /** e.g. `example.test` */
  name: string;
  /** Extra records in zone-file syntax, e.g. `_acme-challenge CNAME x.delegated.test.` */
  records?: string[];
  /** Extra name servers for the NS set, as `[host, address]` (their A records are added). */
  extraNameservers?: Array<[string, string]>;
}

/** A running BIND. */
export interface BindHandle {
  /** `127.0.0.1:<port>`: the server spec for providers and resolvers. */
  readonly server: string;
  readonly port: number;
  /** Allowed to update every zone. */
  readonly key: Required<TsigKey>;
  /** The same, with HMAC-SHA512. */
  readonly key512: Required<TsigKey>;
  /** Known to BIND, allowed to update nothing. */
  readonly readOnlyKey: Required<TsigKey>;
  /** Provider options that look up and check propagation through this BIND (it serves on a high port). */
  dnsOptions(timeoutMs?: number): { resolvers: string[]; propagation: { nameserverPort: number; intervalMs: number; timeoutMs: number } };
  /** TXT values BIND serves at `name` (empty when there are none). */
  txt(name: string): Promise<string[]>;
  logs(): string;
  stop(): Promise<void>;
}

const secret = () => randomBytes(32).toString('base64');

function zoneFile(zone: BindZoneSpec): string {
  const extra = zone.extraNameservers ?? [];
  return [
    '$TTL 60',
    `@ IN SOA ns.${zone.name}. hostmaster.${zone.name}. 1 60 60 600 1`,
    `@ IN NS ns.${zone.name}.`,
    ...extra.map(([host]) => `@ IN NS ${host}.`),
    `ns IN A 127.0.0.1`,
    ...extra.map(([host, address]) => `${host}. IN A ${address}`),
    ...(zone.records ?? []),
    '',
  ].join('\n');
}

/**
 * Start BIND with `zones`. Returns `undefined` (after a loud SKIP warning)
 * when named is not installed, unless `CI` is set: then it throws.
 */
export async function startBind(zones: BindZoneSpec[]): Promise<BindHandle | undefined> {
  // /usr/sbin is not on every user's PATH.
  const bin = findExecutable('named') ?? (existsSync('/usr/sbin/named') ? '/usr/sbin/named' : undefined);
  if (!bin) {
    if (process.env.CI) throw new Error('named not found; CI must install Debian\'s bind9 package (apt-get install bind9)');
    console.warn('\n*** SKIP: named (BIND 9) not installed; the DNS-01 tests against BIND are skipped. Install with: apt-get install bind9 ***\n');
    return undefined;
  }
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-bind-'));
  const key: Required<TsigKey> = { name: 'certstate-test', algorithm: 'hmac-sha256', secret: secret() };
  const key512: Required<TsigKey> = { name: 'certstate-test-512', algorithm: 'hmac-sha512', secret: secret() };
  const readOnlyKey: Required<TsigKey> = { name: 'certstate-readonly', algorithm: 'hmac-sha256', secret: secret() };
  await writeFile(path.join(dir, 'root.db'), '$TTL 60\n@ IN SOA ns.root. hostmaster.root. 1 60 60 600 1\n@ IN NS ns.root.\nns.root. IN A 127.0.0.1\n');
  for (const zone of zones) await writeFile(path.join(dir, `${zone.name}.db`), zoneFile(zone));

  let lastError: unknown;
  for (let tries = 0; tries < 3; tries++) {
    const port = await freePort();
    const conf = [
      'options {',
      `  directory "${dir}";`,
      `  listen-on port ${port} { 127.0.0.1; };`,
      '  listen-on-v6 { none; };',
      '  pid-file none;',
      '  session-keyfile none;',
      // Recursion for loopback only, so a CNAME into another zone here is chased the way the CA's
      // resolver chases it; the root zone below is ours, so no question ever leaves the machine.
      '  recursion yes;',
      '  allow-recursion { 127.0.0.1; };',
      '  dnssec-validation no;',
      '  notify no;',
      '};',
      'controls { };',
      ...[key, key512, readOnlyKey].map((k) => `key "${k.name}" { algorithm ${k.algorithm}; secret "${k.secret}"; };`),
      'zone "." { type primary; file "root.db"; };',
      ...zones.map((z) => `zone "${z.name}" { type primary; file "${z.name}.db"; allow-update { key "${key.name}"; key "${key512.name}"; }; };`),
      '',
    ].join('\n');
    const confFile = path.join(dir, 'named.conf');
    await writeFile(confFile, conf);
    const log = { text: '' };
    // -g: foreground, logging to stderr; no -u: it runs as whoever runs the tests.
    const child = spawnLogged(bin, ['-g', '-c', confFile], process.env, log);
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    // Ready when every zone answers its SOA ("running" is logged before zones load, too).
    const zonesLoaded = async () => (await Promise.all(zones.map((z) => resolver.resolveSoa(z.name).then(() => true, () => false)))).every(Boolean);
    try {
      await waitReady(child, 'named', async () => (await canConnect(port)) && (await zonesLoaded()), log, 10_000);
    } catch (error) {
      lastError = error;
      await killChild(child);
      continue;
    }
    return {
      server: `127.0.0.1:${port}`,
      port,
      key,
      key512,
      readOnlyKey,
      dnsOptions: (timeoutMs = 5000) => ({ resolvers: [`127.0.0.1:${port}`], propagation: { nameserverPort: port, intervalMs: 50, timeoutMs } }),
      async txt(name) {
        try {
          return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
        } catch (error) {
          if ((error as { code?: string }).code === 'ENODATA' || (error as { code?: string }).code === 'ENOTFOUND') return [];
          throw error;
        }
      },
      logs: () => log.text,
      async stop() {
        await killChild(child);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}

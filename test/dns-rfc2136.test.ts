/**
 * `rfc2136DnsProvider` against a real BIND 9: the provider conformance suite,
 * TSIG with both algorithms, and each way the server (or something in
 * between) can say no — a wrong secret, an unknown key, a key without
 * rights, a tampered or unsigned answer.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { rfc2136DnsProvider, type Rfc2136DnsProviderOptions } from '../src/adapters/challenges/dns/rfc2136.js';
import { ConfigError, DnsServerError } from '../src/errors.js';
import { silentServer } from './helpers/backends.js';
import { startBind } from './helpers/bind.js';
import { capturingLogger, runDnsProviderConformance } from './helpers/dns-conformance.js';

const bind = await startBind([{ name: 'example.test' }, { name: 'other.test' }]);
const silent = await silentServer();
after(async () => {
  await bind?.stop();
  await silent.close();
});


if (bind) {
  const log = capturingLogger();
  const options = (extra: Partial<Rfc2136DnsProviderOptions> = {}): Rfc2136DnsProviderOptions => ({
    server: bind.server,
    tsigKey: bind.key,
    ...bind.dnsOptions(),
    logger: log.logger,
    ...extra,
  });
  runDnsProviderConformance('rfc2136 (BIND 9, TSIG hmac-sha256)', async () => ({
    provider: rfc2136DnsProvider(options()),
    zone: 'example.test',
    published: (fqdn) => bind.txt(fqdn),
    withBadCredentials: () => rfc2136DnsProvider(options({ tsigKey: { ...bind.key, secret: Buffer.alloc(32, 7).toString('base64') } })),
    hanging: () => rfc2136DnsProvider(options({ server: `127.0.0.1:${silent.port}`, timeoutMs: 30_000, requestTimeoutMs: 500, followCname: false, propagation: false })),
    secrets: [bind.key.secret],
    logs: log.logs,
  }));
} else {
  describe('rfc2136 conformance', () => it('needs BIND', { skip: 'named not installed' }, () => {}));
}

const skip = bind ? false : 'named not installed (apt-get install bind9)';

describe('rfc2136DnsProvider against BIND', { skip }, () => {
  const plain = (extra: Partial<Rfc2136DnsProviderOptions> = {}) => rfc2136DnsProvider({ server: bind!.server, tsigKey: bind!.key, followCname: false, propagation: false, ...extra });

  it('signs with HMAC-SHA512 too, over UDP as well as TCP', async () => {
    const name = '_acme-challenge.sha512.example.test';
    await rfc2136DnsProvider({ server: bind!.server, tsigKey: bind!.key512, transport: 'udp', followCname: false, propagation: false }).set(name, 'v512');
    assert.deepEqual(await bind!.txt(name), ['v512']);
    await plain({ tsigKey: bind!.key512 }).remove(name, 'v512');
    assert.deepEqual(await bind!.txt(name), []);
  });

  it('finds the zone by asking the server for the SOA, and takes a configured one', async () => {
    await plain().set('_acme-challenge.deep.below.other.test', 'z1');
    assert.deepEqual(await bind!.txt('_acme-challenge.deep.below.other.test'), ['z1']);
    await plain({ zone: 'other.test' }).remove('_acme-challenge.deep.below.other.test', 'z1');
    assert.deepEqual(await bind!.txt('_acme-challenge.deep.below.other.test'), []);
    await assert.rejects(plain({ zone: 'other.test' }).set('_acme-challenge.example.test', 'z2'), (e: unknown) => e instanceof DnsServerError && e.code === 'ERR_DNS_NOT_IN_ZONE');
  });

  it('says which TSIG problem the server reported: BADSIG, BADKEY; REFUSED for a key without rights', async () => {
    const name = '_acme-challenge.refused.example.test';
    const cases: Array<[Partial<Rfc2136DnsProviderOptions>, string, string]> = [
      [{ tsigKey: { ...bind!.key, secret: Buffer.alloc(32, 1).toString('base64') } }, 'ERR_DNS_TSIG_REFUSED', 'BADSIG'],
      [{ tsigKey: { ...bind!.key, name: 'no-such-key' } }, 'ERR_DNS_TSIG_REFUSED', 'BADKEY'],
      [{ tsigKey: bind!.readOnlyKey }, 'ERR_DNS_RCODE', 'REFUSED'],
      [{ tsigKey: undefined }, 'ERR_DNS_RCODE', 'REFUSED'],
    ];
    for (const [extra, code, rcode] of cases) {
      await assert.rejects(plain(extra).set(name, 'x'), (e: unknown) => e instanceof DnsServerError && e.code === code && e.rcode === rcode && e.provider === 'rfc2136', `${code} ${rcode}`);
    }
    assert.deepEqual(await bind!.txt(name), []);
  });

  it('refuses an answer that is tampered with or not signed by our key (a proxy in between)', async () => {
    for (const [tamper, code] of [
      // Flip the AA bit of the header: covered by the MAC.
      [(answer: Buffer) => (answer[2]! ^= 0x04, answer), 'ERR_DNS_TSIG_MISMATCH'],
      // Strip the TSIG record: ARCOUNT 0 and the bytes cut at its start.
      [(answer: Buffer) => stripLastRecord(answer), 'ERR_DNS_TSIG_UNSIGNED'],
    ] as const) {
      const proxy = await tcpProxy(bind!.port, tamper);
      try {
        const name = `_acme-challenge.tamper-${code.toLowerCase()}.example.test`;
        await assert.rejects(plain({ server: `127.0.0.1:${proxy.port}`, zone: 'example.test' }).set(name, 'x'), (e: unknown) => e instanceof DnsServerError && e.code === code, code);
      } finally {
        await proxy.close();
      }
    }
  });

  it('refuses bad options with ConfigError, never echoing the secret', () => {
    const secret = 'c2hvcnQgc2VjcmV0'; // "short secret": 12 bytes, too short for an HMAC key
    for (const options of [
      { server: 'ns.example.test' },
      { server: bind!.server, tsigKey: { name: 'k', secret } },
      { server: bind!.server, tsigKey: { name: 'k', secret: bind!.key.secret, algorithm: 'hmac-md5' as never } },
      { server: bind!.server, tsigKey: { name: 'bad name!', secret: bind!.key.secret } },
      { server: bind!.server, zone: '..' },
      { server: bind!.server, ttl: -1 },
      { server: bind!.server, propagation: { timeoutMs: 0 } },
      { server: bind!.server, resolvers: ['resolver.example'] },
    ]) {
      assert.throws(() => rfc2136DnsProvider(options), (e: unknown) => e instanceof ConfigError && !e.message.includes(secret) && !e.message.includes(bind!.key.secret), JSON.stringify(options));
    }
  });
});

/** The answer without its last record (the TSIG), ARCOUNT one less. */
function stripLastRecord(answer: Buffer): Buffer {
  // The TSIG record is the last thing in the message: its owner name is ours, so search back for it.
  const keyName = Buffer.from([14, ...Buffer.from('certstate-test'), 0]);
  const at = answer.lastIndexOf(keyName);
  const out = Buffer.from(answer.subarray(0, at));
  out.writeUInt16BE(out.readUInt16BE(10) - 1, 10);
  return out;
}

/** A TCP DNS proxy to BIND that rewrites each answer. */
async function tcpProxy(targetPort: number, rewrite: (answer: Buffer) => Buffer): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    client.pipe(upstream);
    let buffered = Buffer.alloc(0);
    upstream.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 2 || buffered.length < 2 + buffered.readUInt16BE(0)) return;
      const answer = rewrite(Buffer.from(buffered.subarray(2, 2 + buffered.readUInt16BE(0))));
      const length = Buffer.alloc(2);
      length.writeUInt16BE(answer.length);
      client.write(Buffer.concat([length, answer]));
    });
    for (const s of [client, upstream]) s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * What every provider shares (`defineDnsProvider`): the propagation check
 * over a zone's authoritative servers, CNAME delegation, and hostile DNS
 * answers. BIND is the primary; a second "name server" is a stand-in on
 * 127.0.0.2 that lags behind it on purpose, and hostile resolvers are
 * stand-ins too.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, describe, it } from 'node:test';
import dnsPacket from 'dns-packet';
import { defineDnsProvider, rfc2136DnsProvider, type DnsProviderOptions, type TxtRecord } from '../src/adapters/challenges/dns/index.js';
import { DnsError, DnsPropagationError, DnsServerError } from '../src/errors.js';
import { startBind } from './helpers/bind.js';

const bind = await startBind([
  { name: 'example.test', records: ['_acme-challenge.loop IN CNAME hop.example.test.', 'hop IN CNAME _acme-challenge.loop.example.test.', '_acme-challenge.chain IN CNAME one.delegated.test.'] },
  { name: 'delegated.test', records: ['one IN CNAME two.delegated.test.'] },
  { name: 'lag.test', extraNameservers: [['ns2.lag.test', '127.0.0.2']] },
]);
const skip = bind ? false : 'named not installed (apt-get install bind9)';

/** A UDP DNS stand-in: `answer` builds the reply bytes for each query (or none). */
async function standIn(host: string, port: number, answer: (query: dnsPacket.DecodedPacket, raw: Buffer) => Buffer | undefined) {
  const socket = dgram.createSocket('udp4');
  let asked = 0;
  socket.on('message', (raw, from) => {
    asked++;
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(raw);
    } catch {
      return;
    }
    const reply = answer(query, raw);
    if (reply) socket.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => resolve());
  });
  return { port: socket.address().port, asked: () => asked, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

/** The lagging secondary of lag.test: authoritative, serving only `values`. */
const secondaryValues = new Set<string>();
const secondary = bind
  ? await standIn('127.0.0.2', bind.port, (query) => {
      const q = query.questions![0]!;
      const answers = q.type === 'TXT' ? [...secondaryValues].map((v) => ({ type: 'TXT' as const, name: q.name, ttl: 60, data: [v] })) : [];
      return dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: query.questions, answers });
    })
  : undefined;

after(async () => {
  await secondary?.close();
  await bind?.stop();
});

const provider = (extra: Partial<DnsProviderOptions> & { timeoutMs?: number } = {}) => {
  const { timeoutMs = 5000, ...rest } = extra;
  return rfc2136DnsProvider({ server: bind!.server, tsigKey: bind!.key, ...bind!.dnsOptions(timeoutMs), ...rest });
};

/** A writer that records where it was asked to write (and writes nowhere). */
function recordingWriter() {
  const added: TxtRecord[] = [];
  return { added, writer: { name: 'recording', add: async (r: TxtRecord) => void added.push(r), delete: async () => undefined } };
}

describe('propagation: every authoritative server must answer the value', { skip }, () => {
  it('names the lagging server when the time is up; resolves once it catches up', async () => {
    const name = '_acme-challenge.www.lag.test';
    const p = provider({ timeoutMs: 600 });
    await p.set(name, 'lagging-value');
    const error = await p.waitForPropagation!(name, 'lagging-value').then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof DnsPropagationError, String(error));
    assert.equal(error.code, 'ERR_DNS_PROPAGATION_TIMEOUT');
    assert.equal(error.fqdn, name);
    assert.equal(error.lagging.length, 1, `only the secondary lags: ${error.lagging.join('; ')}`);
    assert.match(error.lagging[0]!, new RegExp(`^ns2\\.lag\\.test \\(127\\.0\\.0\\.2:${bind!.port}\\): answers no TXT value`));

    let caughtUp = false;
    setTimeout(() => {
      secondaryValues.add('lagging-value');
      caughtUp = true;
    }, 300);
    await provider({ timeoutMs: 10_000 }).waitForPropagation!(name, 'lagging-value');
    assert.ok(caughtUp, 'resolved only after the secondary answered the value');
    await p.remove(name, 'lagging-value');
    secondaryValues.clear();
  });

  it('asks only the configured name servers when given; an abort ends the wait at once', async () => {
    const name = '_acme-challenge.www.lag.test';
    const p = provider({ propagation: { nameservers: [bind!.server], intervalMs: 50 } });
    await p.set(name, 'primary-only');
    const before = secondary!.asked();
    await p.waitForPropagation!(name, 'primary-only');
    assert.equal(secondary!.asked(), before, 'the secondary was not asked');

    const controller = new AbortController();
    const reason = new Error('attempt over');
    const waiting = provider({ timeoutMs: 60_000 }).waitForPropagation!(name, 'primary-only', { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);
    await assert.rejects(waiting, (e) => e === reason);
    await p.remove(name, 'primary-only');
  });
});

describe('CNAME delegation', { skip }, () => {
  it('follows a chain across zones and writes at its end; removes there too', async () => {
    const p = provider();
    await p.set('_acme-challenge.chain.example.test', 'delegated-value');
    assert.deepEqual(await bind!.txt('two.delegated.test'), ['delegated-value']);
    await p.waitForPropagation!('_acme-challenge.chain.example.test', 'delegated-value');
    await p.remove('_acme-challenge.chain.example.test', 'delegated-value');
    assert.deepEqual(await bind!.txt('two.delegated.test'), []);
  });

  it('followCname: false writes at the name itself', async () => {
    for (const [followCname, expected] of [[true, 'two.delegated.test'], [false, '_acme-challenge.chain.example.test']] as const) {
      const { added, writer } = recordingWriter();
      await defineDnsProvider(writer, { resolvers: [bind!.server], followCname, propagation: false }).set('_acme-challenge.chain.example.test', 'v');
      assert.deepEqual(added.map((r) => [r.fqdn, r.challengeName]), [[expected, '_acme-challenge.chain.example.test']]);
    }
  });

  it('a CNAME loop is a typed error, not a hang', async () => {
    const { added, writer } = recordingWriter();
    await assert.rejects(defineDnsProvider(writer, { resolvers: [bind!.server], propagation: false }).set('_acme-challenge.loop.example.test', 'v'), (e: unknown) => e instanceof DnsError && e.code === 'ERR_DNS_CNAME_LOOP');
    assert.equal(added.length, 0);
  });
});

describe('hostile DNS answers are typed errors, never a crash or a hang', () => {
  const header = (query: Buffer) => Buffer.from([query[0]!, query[1]!, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]);
  const cases: Array<[string, (q: dnsPacket.DecodedPacket, raw: Buffer) => Buffer | undefined, string]> = [
    ['garbage after a valid header', (_q, raw) => Buffer.concat([header(raw), Buffer.from([0xff, 0xff, 0xff])]), 'ERR_DNS_MALFORMED'],
    // The question's name is a compression pointer to itself.
    ['a compression pointer loop', (_q, raw) => Buffer.concat([header(raw), Buffer.from([0xc0, 12, 0, 5, 0, 1])]), 'ERR_DNS_MALFORMED'],
    ['a wrong message ID (ignored, then the timeout)', (q) => dnsPacket.encode({ type: 'response', id: (q.id! + 1) % 65536, questions: q.questions }), 'ERR_DNS_TIMEOUT'],
    ['an answer to another question', (q) => dnsPacket.encode({ type: 'response', id: q.id, questions: [{ type: 'CNAME', name: 'elsewhere.test' }] }), 'ERR_DNS_MALFORMED'],
    [
      'a CNAME to a name no DNS name can be',
      (q) => dnsPacket.encode({ type: 'response', id: q.id, questions: q.questions, answers: [{ type: 'CNAME', name: q.questions![0]!.name, data: 'a b/../c.test' }] }),
      'ERR_DNS_MALFORMED',
    ],
    ['SERVFAIL', (q) => dnsPacket.encode({ type: 'response', id: q.id, flags: 2, questions: q.questions }), 'ERR_DNS_RCODE'],
  ];
  for (const [what, answer, code] of cases) {
    it(what, async () => {
      const hostile = await standIn('127.0.0.1', 0, answer);
      try {
        const { added, writer } = recordingWriter();
        const p = defineDnsProvider(writer, { resolvers: [`127.0.0.1:${hostile.port}`], propagation: { queryTimeoutMs: 300 } });
        await assert.rejects(p.set('_acme-challenge.hostile.test', 'v'), (e: unknown) => e instanceof DnsServerError && e.code === code, `${what}: ${code}`);
        assert.equal(added.length, 0);
      } finally {
        await hostile.close();
      }
    });
  }
});

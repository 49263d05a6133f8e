/**
 * The shared provider layer (`defineDnsProvider`) on its own, with backends
 * that misbehave on purpose: errors that carry credentials, backends that
 * hang, a CNAME that changes between set and remove, names and values no
 * DNS record can hold.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, describe, it } from 'node:test';
import { inspect } from 'node:util';
import dnsPacket from 'dns-packet';
import { defineDnsProvider, type TxtRecord, type TxtRecordWriter } from '../src/adapters/challenges/dns/index.js';
import { DnsError, DnsProviderError, DnsServerError } from '../src/errors.js';

const SECRET = 'tok_0123456789abcdefSECRET';
const off = { followCname: false, propagation: false } as const;
const writer = (overrides: Partial<TxtRecordWriter>): TxtRecordWriter => ({ name: 'test', secrets: [SECRET], add: async () => undefined, delete: async () => undefined, ...overrides });

/** A resolver stand-in answering CNAME questions from `cnames` (changeable). */
const cnames = new Map<string, string>();
const resolver = dgram.createSocket('udp4');
resolver.on('message', (raw, from) => {
  const query = dnsPacket.decode(raw);
  const q = query.questions![0]!;
  const target = cnames.get(q.name);
  const answers = q.type === 'CNAME' && target ? [{ type: 'CNAME' as const, name: q.name, ttl: 60, data: target }] : [];
  resolver.send(dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: query.questions, answers }), from.port, from.address);
});
await new Promise<void>((resolve) => resolver.bind(0, '127.0.0.1', () => resolve()));
after(() => resolver.close());

describe('defineDnsProvider', () => {
  it('an error carrying a credential leaves without it: foreign errors replaced, ours scrubbed', async () => {
    const foreign = Object.assign(new Error(`401: token ${SECRET} is invalid`), { config: { headers: { authorization: `Bearer ${SECRET}` } } });
    const ours = new DnsServerError(`refused for key ${SECRET}`, { code: 'ERR_DNS_RCODE', rcode: 'REFUSED' });
    for (const thrown of [foreign, ours, `a string with ${SECRET}`]) {
      const p = defineDnsProvider(writer({ add: async () => Promise.reject(thrown) }), off);
      const error = await p.set('_acme-challenge.example.test', 'v').then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof DnsError, inspect(error));
      const everything = `${inspect(error, { depth: 10, showHidden: true })}${(error as Error).stack}${JSON.stringify(error)}`;
      assert.ok(!everything.includes(SECRET), everything);
      assert.match((error as Error).message, /\[redacted\]/);
      assert.equal((error as DnsError).provider, 'test');
    }
  });

  it('a hanging backend: removal (which has no signal) fails after requestTimeoutMs; the caller\'s abort wins over the backend\'s own error', async () => {
    const hang = (_r: TxtRecord, signal: AbortSignal) => new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(new Error('backend noticed the abort'))));
    const p = defineDnsProvider(writer({ add: hang, delete: hang }), { ...off, requestTimeoutMs: 200 });
    await assert.rejects(p.remove('_acme-challenge.example.test', 'v'), (e: unknown) => e instanceof DnsProviderError && e.code === 'ERR_DNS_TIMEOUT');
    const reason = new Error('attempt stopped');
    const controller = new AbortController();
    const pending = defineDnsProvider(writer({ add: hang }), off).set('_acme-challenge.example.test', 'v', { signal: controller.signal });
    controller.abort(reason);
    await assert.rejects(pending, (e) => e === reason);
  });

  it('removal goes where the value was written, even if the CNAME changed since', async () => {
    const written: string[] = [];
    const deleted: string[] = [];
    const p = defineDnsProvider(writer({ add: async (r) => void written.push(r.fqdn), delete: async (r) => void deleted.push(r.fqdn) }), {
      resolvers: [`127.0.0.1:${resolver.address().port}`],
      propagation: false,
    });
    cnames.set('_acme-challenge.moved.test', 'first.challenges.test');
    await p.set('_acme-challenge.moved.test', 'v');
    cnames.set('_acme-challenge.moved.test', 'second.challenges.test');
    await p.remove('_acme-challenge.moved.test', 'v');
    assert.deepEqual([written, deleted], [['first.challenges.test'], ['first.challenges.test']]);
    // Without a remembered write (another process set it), removal follows the CNAME as it is now.
    await p.remove('_acme-challenge.moved.test', 'v');
    assert.deepEqual(deleted, ['first.challenges.test', 'second.challenges.test']);
  });

  it('names and values no TXT record can hold are refused before the backend is called', async () => {
    let calls = 0;
    const p = defineDnsProvider(writer({ add: async () => void calls++ }), off);
    for (const [name, value, code] of [
      ['_acme-challenge.a..b', 'v', 'ERR_DNS_BAD_NAME'],
      ['_acme-challenge.bücher.test', 'v', 'ERR_DNS_BAD_NAME'],
      [`_acme-challenge.${'a'.repeat(64)}.test`, 'v', 'ERR_DNS_BAD_NAME'],
      ['_acme-challenge.example.test', '', 'ERR_DNS_BAD_VALUE'],
      ['_acme-challenge.example.test', 'has space', 'ERR_DNS_BAD_VALUE'],
      ['_acme-challenge.example.test', 'x'.repeat(256), 'ERR_DNS_BAD_VALUE'],
    ] as const) {
      await assert.rejects(p.set(name, value), (e: unknown) => e instanceof DnsError && e.code === code, `${name} ${value.slice(0, 10)}`);
    }
    assert.equal(calls, 0);
  });
});

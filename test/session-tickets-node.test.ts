/**
 * What Node does with session tickets, pinned: the session-ticket design
 * (ARCHITECTURE.md, "Session tickets across a cluster") rests on each of
 * these, and ticket-key-callback.ts reaches past Node's public API. If a Node
 * upgrade changes one, this file says which.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { TicketIvs, compileTicketKeys, installTicketKeyCallback, supportsTicketKeyCallback } from '../src/engine/ticket-key-callback.js';
import type { CertificateBundle } from '../src/types.js';
import { installTestCa, testLeafKey } from './helpers/scripted-issuer.js';
import { connectResuming } from './helpers/tls.js';

let bundle: Promise<CertificateBundle> | undefined;
/** One certificate for `app.localhost` from the test CA. */
function certificate(): Promise<CertificateBundle> {
  bundle ??= (async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const { pino } = await import('pino');
    return localCaIssuer({ leafKey: testLeafKey() }).issue({ names: ['app.localhost'] }, { storage, signal: new AbortController().signal, logger: pino({ level: 'silent' }), now: Date.now });
  })();
  return bundle;
}

const contextFor = async (options: tls.SecureContextOptions = {}) => {
  const { certificatePem, privateKeyPem } = await certificate();
  return tls.createSecureContext({ cert: certificatePem, key: privateKeyPem, ...options });
};

interface Served {
  port: number;
  server: tls.Server;
  sniCalls: string[];
  close(): Promise<void>;
}

/** A TLS server whose certificate comes from an SNI context (as with certstate), with extra server options. */
async function serve(options: tls.TlsOptions & { sniTicketKeys?: Buffer } = {}): Promise<Served> {
  const { sniTicketKeys, ...serverOptions } = options;
  const context = await contextFor(sniTicketKeys ? { ticketKeys: sniTicketKeys } : {});
  const sniCalls: string[] = [];
  const server = tls.createServer({ ...serverOptions, SNICallback: (name, cb) => (sniCalls.push(name), cb(null, context)) }, (socket) => socket.end('ok'));
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server, sniCalls, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const connect = (port: number, maxVersion: tls.SecureVersion, session?: Buffer) => connectResuming(port, { maxVersion, session });

/** Does a session from server `from` resume on server `to`? */
async function resumes(from: Served, to: Served, version: tls.SecureVersion): Promise<boolean> {
  const first = await connect(from.port, version);
  assert.ok(first.session, 'a ticket was issued');
  return (await connect(to.port, version, first.session)).reused;
}

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  describe(`Node's session tickets (${version})`, () => {
    it("the server's own ticket keys decide; the SNI context's are never used", async () => {
      const shared = randomBytes(48);
      const a = await serve({ ticketKeys: shared, sessionIdContext: 'x' });
      const b = await serve({ ticketKeys: shared, sessionIdContext: 'x' });
      const c = await serve({ ticketKeys: randomBytes(48), sessionIdContext: 'x', sniTicketKeys: shared });
      try {
        assert.equal(await resumes(a, b, version), true, 'same server keys, SNI contexts without keys: resumes');
        assert.equal(await resumes(a, c, version), false, 'SNI context holding the key, server without it: does not');
      } finally {
        await Promise.all([a.close(), b.close(), c.close()]);
      }
    });

    it('servers must share the session id context (Node derives its default from the process argv)', async () => {
      const shared = randomBytes(48);
      const a = await serve({ ticketKeys: shared, sessionIdContext: 'one' });
      const b = await serve({ ticketKeys: shared, sessionIdContext: 'two' });
      try {
        assert.equal(await resumes(a, b, version), false);
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    it('a resumed handshake does not call the SNI callback', async () => {
      const a = await serve({ sessionIdContext: 'x' });
      try {
        const first = await connect(a.port, version);
        assert.deepEqual(a.sniCalls, ['app.localhost']);
        assert.equal((await connect(a.port, version, first.session)).reused, true);
        assert.deepEqual(a.sniCalls, ['app.localhost'], 'no second call');
      } finally {
        await a.close();
      }
    });

    it("the public API holds one key: setTicketKeys() ends every earlier ticket", async () => {
      const a = await serve({ ticketKeys: randomBytes(48), sessionIdContext: 'x' });
      try {
        const first = await connect(a.port, version);
        a.server.setTicketKeys(randomBytes(48));
        assert.equal((await connect(a.port, version, first.session)).reused, false);
      } finally {
        await a.close();
      }
    });

    it("the internal ticket-key callback holds several keys: old ones decrypt (and renew), unknown ones get a full handshake", async () => {
      const [k1, k2] = [randomBytes(48), randomBytes(48)];
      let keys = compileTicketKeys(k1, [{ key: k1, renew: false }]);
      const a = await serve({ sessionIdContext: 'x' });
      const b = await serve({ sessionIdContext: 'x' });
      try {
        assert.equal(supportsTicketKeyCallback(a.server), true, "this Node still has server._sharedCreds.context.enableTicketKeyCallback");
        assert.ok(installTicketKeyCallback(a.server, () => keys) && installTicketKeyCallback(b.server, () => keys));
        const first = await connect(a.port, version);
        assert.equal((await connect(b.port, version, first.session)).reused, true, 'one key, two servers');
        keys = compileTicketKeys(k2, [{ key: k1, renew: true }, { key: k2, renew: false }]);
        const renewed = await connect(b.port, version, first.session);
        assert.equal(renewed.reused, true, 'the previous key still decrypts');
        assert.ok(renewed.session, 'and a fresh ticket is issued');
        keys = compileTicketKeys(k2, [{ key: k2, renew: false }]);
        assert.equal((await connect(b.port, version, renewed.session)).reused, true, 'the fresh ticket is under the new key');
        const refused = await connect(b.port, version, first.session);
        assert.equal(refused.reused, false, 'a retired key: a full handshake, not a failure');
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });
  });
}

describe('ticket IVs', () => {
  it('every ticket the callback encrypts gets an IV of its own, past a refill of the IV batch', () => {
    const server = tls.createServer({});
    const key = randomBytes(48);
    assert.ok(installTicketKeyCallback(server, () => compileTicketKeys(key, [{ key, renew: false }])));
    const context = (server as unknown as { _sharedCreds: { context: { onticketkeycallback: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[] } } })._sharedCreds.context;
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const answer = context.onticketkeycallback(Buffer.alloc(16), Buffer.alloc(16), true);
      assert.equal(answer[0], 1, 'a ticket is issued');
      const iv = answer[4] as Buffer;
      assert.equal(iv.length, 16);
      // Copied as Node copies it, before the next ticket.
      seen.add(iv.toString('hex'));
    }
    assert.equal(seen.size, 1000, 'no IV used twice');
  });

  it('TicketIvs hands out distinct 16-byte IVs across refills', () => {
    const ivs = new TicketIvs();
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) seen.add(ivs.take().toString('hex'));
    assert.equal(seen.size, 1000);
  });
});

/**
 * How a server on `engine.tlsOptions()` chooses the application protocol:
 * Node's `ALPNProtocols` (chosen inside OpenSSL) unless something needs the
 * JS `ALPNCallback` — an issuer that may use TLS-ALPN-01, or `defaultName`
 * (handshake-answers.ts, `alpnMode`). Both modes must negotiate alike: the
 * server's preference among what the client offers, nothing for a client
 * that offers no ALPN, a `no_application_protocol` alert when nothing overlaps.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { acmeIssuer, ConfigError, createCertEngine, localCaCertificate, localCaIssuer, memoryStorage, type CertEngine, type Issuer } from '../src/index.js';
import { alpnMode, mayUseTlsAlpn01 } from '../src/engine/handshake-answers.js';

let cas = 0;
/** An ACME issuer (never asked anything here), each with its own CA URL: issuer ids must differ. */
const acme = (challenges?: Array<'http-01' | 'tls-alpn-01' | 'dns-01'>) =>
  acmeIssuer({ directoryUrl: `https://ca${cas++}.acme.invalid/directory`, agreeToTerms: true, ...(challenges ? { challenges } : {}) });
/** An issuer written by an application, saying nothing about challenges. */
const custom: Issuer = { id: 'custom', issue: async () => Promise.reject(new Error('not in this test')) };

/** Which selection `tlsOptions()` handed the server. */
function selection(options: object): 'callback' | 'protocols' {
  const o = options as { ALPNCallback?: unknown; ALPNProtocols?: unknown };
  assert.ok(!(o.ALPNCallback && o.ALPNProtocols), 'never both: Node refuses ALPNProtocols beside ALPNCallback');
  assert.ok(o.ALPNCallback || o.ALPNProtocols, 'one of them');
  return o.ALPNCallback ? 'callback' : 'protocols';
}

describe('which protocol selection tlsOptions() sets up', () => {
  const engines: CertEngine[] = [];
  const engine = (issuers: Issuer[], extra: { defaultName?: string } = {}) => {
    const e = createCertEngine({ storage: memoryStorage(), issuers, names: ['a.localhost'], ...extra });
    engines.push(e);
    return e;
  };
  after(async () => {
    for (const e of engines) await e.stop();
  });

  it('ALPNProtocols when no issuer may use TLS-ALPN-01 and no defaultName; the JS callback otherwise', () => {
    assert.equal(selection(engine([localCaIssuer()]).tlsOptions()), 'protocols', 'a local CA answers no challenge');
    assert.deepEqual((engine([localCaIssuer()]).tlsOptions({ protocols: ['h2', 'http/1.1'] }) as { ALPNProtocols?: string[] }).ALPNProtocols, ['h2', 'http/1.1']);
    assert.deepEqual((engine([localCaIssuer()]).tlsOptions() as { ALPNProtocols?: string[] }).ALPNProtocols, ['http/1.1'], 'the default protocols');
    assert.equal(selection(engine([acme(['http-01'])]).tlsOptions()), 'protocols', 'ACME with HTTP-01 only');
    assert.equal(selection(engine([acme(['http-01']), localCaIssuer()]).tlsOptions()), 'protocols');
    assert.equal(selection(engine([acme()]).tlsOptions()), 'callback', "acmeIssuer's default challenges include tls-alpn-01");
    assert.equal(selection(engine([acme(['http-01']), acme(['tls-alpn-01'])]).tlsOptions()), 'callback', 'any issuer that may use it');
    assert.equal(selection(engine([localCaIssuer(), custom]).tlsOptions()), 'callback', 'an issuer that does not say may use it');
    assert.equal(selection(engine([localCaIssuer()], { defaultName: 'a.localhost' }).tlsOptions()), 'callback', 'defaultName is presented from the ALPN callback');
  });

  it('the application can say otherwise, per server', () => {
    assert.equal(selection(engine([localCaIssuer()]).tlsOptions({ tlsAlpn01: true })), 'callback', 'answers TLS-ALPN-01 for another process of the cluster');
    assert.equal(selection(engine([acme()]).tlsOptions({ tlsAlpn01: false })), 'protocols');
    assert.equal(selection(engine([acme()], { defaultName: 'a.localhost' }).tlsOptions({ tlsAlpn01: false })), 'callback', 'defaultName still needs the callback');
  });

  it('alpnMode and mayUseTlsAlpn01: the decision as a table', () => {
    for (const issuersMayUseTlsAlpn01 of [false, true]) {
      for (const defaultName of [false, true]) {
        for (const tlsAlpn01 of [undefined, false, true]) {
          const answers = tlsAlpn01 ?? issuersMayUseTlsAlpn01;
          assert.deepEqual(alpnMode({ tlsAlpn01, issuersMayUseTlsAlpn01, defaultName }), { selection: answers || defaultName ? 'callback' : 'protocols', tlsAlpn01: answers });
        }
      }
    }
    assert.equal(mayUseTlsAlpn01([{ challenges: [] }, { challenges: ['http-01', 'dns-01'] }]), false);
    assert.equal(mayUseTlsAlpn01([{ challenges: [] }, {}]), true);
    assert.equal(mayUseTlsAlpn01([{ challenges: ['tls-alpn-01'] }]), true);
  });

  it('bad protocols and bad issuer challenges are refused', () => {
    const e = engine([localCaIssuer()]);
    assert.throws(() => e.tlsOptions({ protocols: [] }), TypeError, 'an empty list would turn ALPN off in one mode and refuse every client in the other');
    assert.throws(() => e.tlsOptions({ protocols: ['acme-tls/1'] }), /must not include acme-tls\/1/);
    assert.throws(() => engine([acme()]).tlsOptions({ protocols: ['http/1.1', 'acme-tls/1'] }), /must not include acme-tls\/1/);
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [{ ...custom, challenges: 'tls-alpn-01' as never }] }), ConfigError);
    assert.throws(() => createCertEngine({ storage: memoryStorage(), issuers: [{ ...custom, challenges: ['http-02'] as never }] }), ConfigError);
  });
});

/** What a client negotiated: the protocol (false: none), or the TLS error's code. */
function negotiate(port: number, ca: string, ALPNProtocols?: string[]): Promise<{ protocol?: string | false | null; error?: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'a.localhost', ca, ...(ALPNProtocols ? { ALPNProtocols } : {}) });
    socket.once('secureConnect', () => {
      resolve({ protocol: socket.alpnProtocol });
      socket.destroy();
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
  });
}

for (const mode of ['protocols', 'callback'] as const) {
  describe(`ALPN negotiation with ${mode === 'protocols' ? 'ALPNProtocols' : 'the JS ALPNCallback'}`, () => {
    let engine: CertEngine;
    let server: tls.Server;
    let port: number;
    let ca: string;
    let options: ReturnType<CertEngine['tlsOptions']>;
    before(async () => {
      const storage = memoryStorage();
      engine = createCertEngine({ storage, issuers: [localCaIssuer()], names: ['a.localhost'] });
      await engine.start();
      await engine.getCertificate('a.localhost');
      ca = await localCaCertificate(storage);
      options = engine.tlsOptions({ protocols: ['h2', 'http/1.1'], tlsAlpn01: mode === 'callback' });
      server = tls.createServer(options, (socket) => socket.end());
      server.on('tlsClientError', () => {});
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });
    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await engine.stop();
    });

    it(`the server has ${mode === 'protocols' ? 'ALPNProtocols' : 'the callback'}`, () => {
      assert.equal(selection(options), mode);
    });

    it("the server's preference among what the client offers", async () => {
      assert.deepEqual(await negotiate(port, ca, ['http/1.1', 'h2']), { protocol: 'h2' });
      assert.deepEqual(await negotiate(port, ca, ['h2']), { protocol: 'h2' });
      assert.deepEqual(await negotiate(port, ca, ['spdy/3', 'http/1.1']), { protocol: 'http/1.1' });
    });

    it('a client offering no ALPN is served with no protocol', async () => {
      assert.deepEqual(await negotiate(port, ca), { protocol: false });
    });

    it('no overlap: a no_application_protocol alert (RFC 7301 §3.2), acme-tls/1 included when no challenge is pending', async () => {
      assert.deepEqual(await negotiate(port, ca, ['spdy/3']), { error: 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL' });
      const validation = await negotiate(port, ca, ['acme-tls/1']);
      assert.ok(validation.error, `acme-tls/1 without a pending challenge is refused (${JSON.stringify(validation)})`);
    });
  });
}

describe('calls into JS per handshake', () => {
  it('ALPNProtocols: a full TLS 1.3 handshake makes one SNI call and two ticket encryptions, no ALPN call; the callback adds one per handshake, resumed ones too', async () => {
    const storage = memoryStorage();
    const engine = createCertEngine({ storage, issuers: [localCaIssuer()], names: ['a.localhost'] });
    await engine.start();
    await engine.getCertificate('a.localhost');
    const ca = await localCaCertificate(storage);
    const servers: tls.Server[] = [];
    try {
      for (const tlsAlpn01 of [false, true]) {
        const counts = { sni: 0, alpn: 0, encrypt: 0, decrypt: 0 };
        const options = engine.tlsOptions({ tlsAlpn01 });
        const { SNICallback, ALPNCallback } = options;
        const server = tls.createServer(
          {
            ...options,
            SNICallback(this: tls.TLSSocket, servername, cb) {
              counts.sni++;
              SNICallback.call(this, servername, cb);
            },
            ...(ALPNCallback
              ? {
                  ALPNCallback(this: tls.TLSSocket, info: { servername: string | false; protocols: string[] }) {
                    counts.alpn++;
                    return ALPNCallback.call(this, info);
                  },
                }
              : {}),
          } as tls.TlsOptions,
          (socket) => socket.end('x'),
        );
        servers.push(server);
        engine.attachServer(server);
        // Node's internal hook (ticket-key-callback.ts), wrapped to count what OpenSSL asks.
        const context = (server as unknown as { _sharedCreds: { context: { onticketkeycallback: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown } } })._sharedCreds.context;
        const keys = context.onticketkeycallback;
        context.onticketkeycallback = (name, iv, encrypt) => (encrypt ? counts.encrypt++ : counts.decrypt++, keys(name, iv, encrypt));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const port = (server.address() as AddressInfo).port;
        const connect = (session?: Buffer) =>
          new Promise<{ reused: boolean; session?: Buffer }>((resolve, reject) => {
            let latest: Buffer | undefined;
            let reused = false;
            const socket = tls.connect({ host: '127.0.0.1', port, servername: 'a.localhost', ca, ALPNProtocols: ['http/1.1'], ...(session ? { session } : {}) });
            socket.on('session', (s: Buffer) => (latest = s));
            socket.once('secureConnect', () => (reused = socket.isSessionReused()));
            socket.on('data', () => {});
            socket.once('close', () => resolve({ reused, ...(latest ? { session: latest } : {}) }));
            socket.once('error', reject);
          });
        const full = await connect();
        const extra = tlsAlpn01 ? 1 : 0;
        assert.deepEqual(counts, { sni: 1, alpn: extra, encrypt: 2, decrypt: 0 }, `full handshake, tlsAlpn01: ${tlsAlpn01}`);
        Object.assign(counts, { sni: 0, alpn: 0, encrypt: 0, decrypt: 0 });
        assert.equal((await connect(full.session)).reused, true);
        assert.deepEqual(counts, { sni: 0, alpn: extra, encrypt: 0, decrypt: 1 }, `resumed handshake, tlsAlpn01: ${tlsAlpn01}`);
      }
    } finally {
      for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
      await engine.stop();
    }
  });
});

/**
 * Refusals a client can understand: a name the engine will not serve gets a
 * TLS alert (handshake_failure) that openssl, curl and Node report as such,
 * not a connection closed without a word; refusals are logged, rate-limited,
 * with no application code; `defaultName` answers clients that send no SNI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createCertEngine, localCaCertificate, localCaIssuer, memoryStorage, type CertEngine } from '../src/index.js';

const run = promisify(execFile);

/** What `openssl s_client` printed (it exits non-zero on a failed handshake; the output says why). */
async function sClient(port: number, args: string[]): Promise<string> {
  const result = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], { timeout: 20_000 }).catch(
    (error: { stdout?: string; stderr?: string }) => ({ stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
  return `${result.stdout}\n${result.stderr}`;
}

/** Node's client: the peer certificate's subject CN, or the error code. */
function nodeClient(port: number, options: tls.ConnectionOptions): Promise<{ cn?: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    socket.once('secureConnect', () => {
      resolve({ cn: socket.getPeerCertificate().subject?.CN as string | undefined });
      socket.destroy();
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
  });
}

/** A TLS server as an application writes it: the engine's options and nothing else (a quiet tlsClientError listener aside). */
async function serveTls(engine: CertEngine): Promise<{ port: number; close: () => Promise<void> }> {
  const server = tls.createServer({ ...engine.tlsOptions() }, (socket) => socket.end('hello\n'));
  server.on('tlsClientError', () => {}); // (only to keep the test's output quiet)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('how a TLS client is answered', () => {
  const storage = memoryStorage();
  let engine: CertEngine;
  let server: Awaited<ReturnType<typeof serveTls>>;
  let port: number;
  let ca: string;

  before(async () => {
    engine = createCertEngine({ storage, issuers: [localCaIssuer()], names: ['known.localhost'] });
    await engine.start();
    await engine.getCertificate('known.localhost');
    ca = await localCaCertificate(storage);
    server = await serveTls(engine);
    port = server.port;
  });
  after(async () => {
    await server.close();
    await engine.stop();
  });

  it('a refused name gets a handshake_failure alert, not a closed connection (openssl, curl, Node)', async () => {
    const openssl = await sClient(port, ['-servername', 'refused.example']);
    assert.match(openssl, /alert handshake failure[^\n]*SSL alert number 40/, openssl);
    assert.doesNotMatch(openssl, /unexpected eof|errno=104/);

    const curl = await run('curl', ['-sS', '--resolve', `refused.example:${port}:127.0.0.1`, `https://refused.example:${port}/`], { timeout: 20_000 }).then(
      () => assert.fail('curl connected'),
      (error: { code?: number; stderr?: string }) => error,
    );
    assert.equal(curl.code, 35, 'curl: SSL connect error');
    assert.match(curl.stderr ?? '', /alert handshake failure/, curl.stderr);

    assert.deepEqual(await nodeClient(port, { servername: 'refused.example' }), { error: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' });
    assert.deepEqual(await nodeClient(port, { servername: 'known.localhost', ca, rejectUnauthorized: true }), { cn: 'known.localhost' }, 'known names are served as before');
  });
});

describe('refusals in the log', () => {
  it('are logged without application code: the first at once, then one line a minute whatever the flood, the rest at stop()', async () => {
    const lines: Array<{ msg: string; rejected?: Record<string, number>; count?: number; sample?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [localCaIssuer()], logger });
    await engine.start();
    const { port, close } = await serveTls(engine);
    const refusals = () => lines.filter((l) => l.msg === 'rejected server names');
    try {
      await nodeClient(port, { servername: 'refused.example' });
      assert.equal(refusals().length, 1, 'the first refusal is written at once');
      assert.deepEqual(refusals()[0]!.rejected, { ERR_NAME_NOT_ALLOWED: 1 });
      assert.equal(refusals()[0]!.sample, '"refused.example"');
      await Promise.all(Array.from({ length: 20 }, (_, i) => nodeClient(port, { servername: `flood${i}.example` })));
      assert.equal(refusals().length, 1, 'the flood is counted, not written line by line');
    } finally {
      await close();
      await engine.stop();
    }
    assert.equal(refusals().length, 2, 'stop() writes what was counted');
    assert.deepEqual(refusals()[1]!.rejected, { ERR_NAME_NOT_ALLOWED: 20 });
  });
});

describe('clients without SNI (health checks by IP address)', () => {
  let engine: CertEngine;
  let server: Awaited<ReturnType<typeof serveTls>>;
  let port: number;

  before(async () => {
    engine = createCertEngine({ storage: memoryStorage(), issuers: [localCaIssuer()], names: ['default.localhost', 'other.localhost'], defaultName: 'default.localhost' });
    await engine.start();
    await engine.getCertificate('default.localhost');
    server = await serveTls(engine);
    port = server.port;
  });
  after(async () => {
    await server.close();
    await engine.stop();
  });

  it('get defaultName\'s certificate when they offer ALPN (TLS 1.3), and an alert when they offer neither', async () => {
    // Node sends no SNI for an IP address.
    assert.deepEqual(await nodeClient(port, { ALPNProtocols: ['http/1.1'] }), { cn: 'default.localhost' });
    assert.match(await sClient(port, ['-noservername', '-alpn', 'http/1.1']), /subject=CN ?= ?default\.localhost/);
    assert.match(await sClient(port, ['-noservername']), /SSL alert number 40/);
    // SNI still decides for everyone else.
    assert.deepEqual(await nodeClient(port, { servername: 'other.localhost', ALPNProtocols: ['http/1.1'] }), { cn: 'other.localhost' });
  });
});

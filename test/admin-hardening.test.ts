/**
 * The admin surface against hostile clients and careless operators:
 * - tokenless access is for loopback *peers* only (the socket's address, not
 *   the `Host` header), checked with a real non-loopback peer on this machine;
 * - no token that cannot protect anything (empty, short, unprintable) is
 *   accepted by any door (handler, engine.adminHandler, serveAdmin);
 * - Server-Sent Event clients that stop reading are dropped once they hold
 *   more than a bound, so 100 of them cost bounded memory;
 * - values of any type from `status()` reach `status.json` as bounded text.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { describe, it } from 'node:test';
import { checkAccess, isLoopbackAddress, MIN_TOKEN_LENGTH } from '../src/admin/access.js';
import { createAdminHandler, type AdminEngine } from '../src/admin/handler.js';
import { serveAdmin } from '../src/admin/serve.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine } from '../src/engine/engine.js';
import type { CertEngineEventOf, CertEngineEventType } from '../src/engine/events.js';
import { ConfigError } from '../src/errors.js';
import type { NameStatus } from '../src/types.js';
import { openSse, perNameIssuer } from './helpers/browser.js';
import { installTestCa } from './helpers/scripted-issuer.js';

/** This machine's first address that is not loopback (IPv4 first), or a reason there is none. */
function nonLoopbackAddress(family: 'IPv4' | 'IPv6'): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === family && !a.internal && !(family === 'IPv6' && a.address.toLowerCase().startsWith('fe80'))) return a.address;
    }
  }
  return undefined;
}

/** GET through a given local address (the peer address the server sees), `Host` as given. */
function get(url: string, options: { localAddress?: string; host?: string; method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = { ...(options.host ? { host: options.host } : {}), ...options.headers };
    const req = http.request(url, { method: options.method ?? 'GET', agent: false, headers, ...(options.localAddress ? { localAddress: options.localAddress } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function listen(server: http.Server, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, () => resolve()));
  return (server.address() as net.AddressInfo).port;
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A started engine with one valid name, and its per-name issuer. */
async function engineWith(name: string) {
  const storage = memoryStorage();
  await installTestCa(storage);
  const issuer = perNameIssuer();
  const engine = createCertEngine({ storage, issuers: [issuer], names: [name] });
  await engine.start();
  await engine.getCertificate(name);
  return { engine, issuer };
}

describe('tokenless admin: loopback peers only', () => {
  it('a non-loopback peer sending Host: localhost is refused (403) and cannot renew; a loopback peer on the same server is served', async (t) => {
    const v4 = nonLoopbackAddress('IPv4');
    const v6 = nonLoopbackAddress('IPv6');
    if (v4 === undefined && v6 === undefined) {
      const why = 'this machine has no non-loopback address to connect from';
      if (process.env.CI) assert.fail(`${why}; CI must have one (a real non-loopback peer is the point of this test)`);
      process.stderr.write(`\n*** SKIPPING the non-loopback peer test: ${why} ***\n\n`);
      return t.skip(why);
    }
    const { engine, issuer } = await engineWith('peer.example');
    const handler = createAdminHandler(engine);
    // '::' is dual-stack: IPv4 peers appear as ::ffff:a.b.c.d, which must be told apart too.
    const server = http.createServer(handler);
    const port = await listen(server, '::');
    try {
      const calls = issuer.callsFor('peer.example');
      for (const [address, url] of [
        ...(v4 ? [[v4, `http://${v4}:${port}`]] : []),
        ...(v6 ? [[v6, `http://[${v6}]:${port}`]] : []),
      ] as Array<[string, string]>) {
        for (const path of ['/status.json', '/', '/metrics', '/events']) {
          const r = await get(`${url}${path}`, { localAddress: address, host: 'localhost' });
          assert.equal(r.status, 403, `${path} from peer ${address} with Host: localhost → ${r.status} ${r.body}`);
        }
        const renew = await get(`${url}/names/peer.example/renew?wait=1`, { localAddress: address, host: 'localhost', method: 'POST', headers: { 'x-certstate-action': '1' } });
        assert.equal(renew.status, 403);
      }
      assert.equal(issuer.callsFor('peer.example'), calls, 'no attempt started by a remote peer');

      // The same server, a loopback peer (seen as ::ffff:127.0.0.1): served, and may act.
      assert.equal((await get(`http://127.0.0.1:${port}/status.json`)).status, 200);
      assert.equal((await get(`http://[::1]:${port}/status.json`, { host: 'localhost' })).status, 200);
      const renew = await get(`http://127.0.0.1:${port}/names/peer.example/renew?wait=1`, { method: 'POST', headers: { 'x-certstate-action': '1' } });
      assert.equal(renew.status, 200, renew.body);
      assert.equal(issuer.callsFor('peer.example'), calls + 1);
      // Still the DNS-rebinding defence: a loopback peer with a foreign Host is refused.
      assert.equal((await get(`http://127.0.0.1:${port}/status.json`, { host: 'rebind.evil.example' })).status, 403);
    } finally {
      handler.close();
      await close(server);
      await engine.stop();
    }
  });

  it('the peer check reads the socket address, in every spelling of loopback', () => {
    for (const address of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::FFFF:127.0.0.9', '0:0:0:0:0:ffff:127.0.0.1', '::ffff:7f00:1']) {
      assert.ok(isLoopbackAddress(address), `${address} is loopback`);
    }
    for (const address of ['192.0.2.2', '::ffff:192.0.2.2', '::ffff:c000:202', 'fd00::2', '10.0.0.1', '::', '0.0.0.0', '128.0.0.1', 'localhost', '127.0.0.1.evil.example', '', undefined]) {
      assert.ok(!isLoopbackAddress(address), `${String(address)} is not loopback`);
    }
    const url = new URL('http://x/status.json');
    const req = (remoteAddress: string | undefined, host: string) => ({ headers: { host }, socket: { remoteAddress } }) as unknown as http.IncomingMessage;
    assert.equal(checkAccess(req('203.0.113.7', 'localhost'), url, {})?.status, 403);
    assert.equal(checkAccess(req(undefined, 'localhost'), url, {})?.status, 403, 'a peer the socket cannot name (Unix socket) needs a token');
    assert.equal(checkAccess(req('203.0.113.7', 'admin.internal'), url, { allowedHosts: ['admin.internal'] })?.status, 403, 'allowedHosts widens Host, not peers');
    assert.equal(checkAccess(req('127.0.0.1', 'admin.internal'), url, { allowedHosts: ['admin.internal'] }), undefined);
    assert.equal(checkAccess(req('::ffff:127.0.0.1', 'localhost:9090'), url, {}), undefined);
  });
});

describe('admin tokens', () => {
  it('an empty, short or unprintable token is refused by every door, with ConfigError', async () => {
    const { engine } = await engineWith('tokens.example');
    try {
      const bad = ['', 'x', 'a'.repeat(MIN_TOKEN_LENGTH - 1), `${'a'.repeat(MIN_TOKEN_LENGTH)} b`, `${'a'.repeat(MIN_TOKEN_LENGTH)}\n`, 'é'.repeat(MIN_TOKEN_LENGTH)];
      for (const token of bad) {
        assert.throws(() => createAdminHandler(engine, { token }), ConfigError, `createAdminHandler(${JSON.stringify(token)})`);
        assert.throws(() => engine.adminHandler({ token }), ConfigError, `engine.adminHandler(${JSON.stringify(token)})`);
        await assert.rejects(serveAdmin(engine, { token }), ConfigError, `serveAdmin(${JSON.stringify(token)})`);
      }
      assert.throws(() => createAdminHandler(engine, { token: 42 as unknown as string }), ConfigError);
      // A good token works, and `?token=` with an empty value does not match it.
      const token = 'a'.repeat(MIN_TOKEN_LENGTH);
      const admin = await serveAdmin(engine, { token });
      try {
        assert.equal((await get(`${admin.url}status.json?token=`)).status, 401);
        assert.equal((await get(`${admin.url}status.json?token=${token}`)).status, 200);
      } finally {
        await admin.close();
      }
    } finally {
      await engine.stop();
    }
  });
});

/** A fake engine: status() as given, events fired by the test. */
function scriptedEngine(status: () => NameStatus[]) {
  const listeners = new Map<string, Set<(e: unknown) => void>>();
  const engine: AdminEngine & { emit(type: CertEngineEventType, event: unknown): void } = {
    status,
    on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void) {
      const set = listeners.get(type) ?? new Set();
      listeners.set(type, set);
      set.add(listener as (e: unknown) => void);
      return () => set.delete(listener as (e: unknown) => void);
    },
    forceRenew: async () => {
      throw new Error('not in this test');
    },
    clock: { now: () => Date.now() },
    emit(type, event) {
      for (const l of listeners.get(type) ?? []) l(event);
    },
  };
  return engine;
}

describe('SSE backpressure', () => {
  it('100 clients that never read are dropped once behind the bound; buffered bytes per stream and in total stay bounded; a reading client keeps its stream', async () => {
    const NAMES = 40;
    const BOUND = 256 * 1024;
    const names: NameStatus[] = Array.from({ length: NAMES }, (_, i) => ({
      name: `n${i}.example`,
      state: 'failed-backoff',
      managed: true,
      attempts: 1,
      lastError: { type: 'IssuanceError', message: `CA says no ${'x'.repeat(1900)}`, at: 1 },
    }));
    const engine = scriptedEngine(() => names);
    const handler = createAdminHandler(engine, { updateIntervalMs: 1, maxStreams: 200, maxStreamBufferBytes: BOUND, heartbeatMs: 3_600_000 });
    const streams = new Set<http.ServerResponse>();
    const server = http.createServer((req, res) => {
      if (req.url === '/events') streams.add(res);
      handler(req, res);
    });
    const port = await listen(server, '127.0.0.1');
    const idle: net.Socket[] = [];
    const reader = await openSse(`http://127.0.0.1:${port}/events`);
    const readerStream = [...streams][0]!;
    try {
      // 100 clients that send a request and never read a byte of the answer.
      for (let i = 0; i < 100; i++) {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => {});
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        socket.write('GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        socket.pause();
        idle.push(socket);
      }
      while (streams.size < 101) await new Promise((r) => setTimeout(r, 5));
      const snapshotBytes = Buffer.byteLength(JSON.stringify({ now: 0, names }));
      const perStream = BOUND + snapshotBytes + 1024; // the bound, beyond the snapshot (+ headers and SSE framing)
      const live = () => [...streams].filter((res) => !res.destroyed);

      let updates = 0;
      let maxPerStream = 0;
      let maxTotal = 0;
      // Updates until every idle stream is dropped; each waits for the reading client to receive it.
      for (; updates < 2_000 && live().length > 1; updates++) {
        for (const n of names) engine.emit('state_changed', { type: 'state_changed', name: n.name, from: 'obtaining', to: 'failed-backoff', at: Date.now() });
        await reader.next((e) => e.event === 'update' && reader.events.filter((x) => x.event === 'update').length > updates, 30_000);
        let total = 0;
        for (const res of live()) {
          maxPerStream = Math.max(maxPerStream, res.writableLength);
          total += res.writableLength;
        }
        maxTotal = Math.max(maxTotal, total);
        assert.ok(maxPerStream <= perStream, `a stream held ${maxPerStream} bytes (bound ${perStream})`);
        assert.ok(total <= 101 * perStream, `streams held ${total} bytes in total`);
      }
      assert.deepEqual(live(), [readerStream], `after ${updates} updates only the reading client is left`);
      assert.ok(maxPerStream > BOUND / 2, `the test did fill the buffers (max ${maxPerStream})`);
      const metrics = await get(`http://127.0.0.1:${port}/metrics`);
      assert.match(metrics.body, /^certstate_admin_streams_dropped_total 100$/m);
      // The reading client got every update, and its stream is still open.
      assert.equal(reader.events.filter((e) => e.event === 'update').length, updates);
      assert.deepEqual(live(), [readerStream]);
      process.stderr.write(`# SSE backpressure: ${updates} updates of ~${Math.round((NAMES * 2000) / 1024)} KiB; max buffered per stream ${maxPerStream} B, in total ${maxTotal} B\n`);
    } finally {
      reader.close();
      for (const s of idle) s.destroy();
      handler.close();
      await close(server);
    }
  });
});

describe('hostile values in status()', () => {
  it('an issuer error whose name and message are not strings: status() and the page data carry text', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const engine = createCertEngine({
      storage,
      issuers: [
        {
          id: 'odd',
          async issue() {
            const error = new Error('x');
            Object.assign(error, { name: 42, message: { html: '<b>' } });
            throw error;
          },
        },
      ],
      names: ['odd-issuer.example'],
      timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 },
    });
    try {
      await engine.start();
      await engine.getCertificate('odd-issuer.example').catch(() => undefined);
      const last = engine.status()[0]!.lastError!;
      assert.equal(typeof last.type, 'string');
      assert.equal(typeof last.message, 'string');
      assert.equal(last.type, 'Error');
    } finally {
      await engine.stop();
    }
  });

  it('non-string names and messages, BigInts, huge strings: status.json is valid JSON with bounded text fields', async () => {
    const status = [
      {
        name: 'odd.example',
        state: 'failed-backoff',
        managed: true,
        attempts: 3,
        lastError: { type: 42, message: { toString: () => 'object message' }, code: 10n, detail: 'x'.repeat(1_000_000), at: 1 },
        nextAttemptAt: Number.NaN,
        certificate: { fingerprint: 'F', serial: 7n, names: ['odd.example', 5], notBefore: 0, notAfter: 1e300, issuer: Symbol('issuer'), issuerId: null },
        extra: { nested: { deeper: 1n } },
      },
    ] as unknown as NameStatus[];
    const handler = createAdminHandler(scriptedEngine(() => status));
    const server = http.createServer(handler);
    const port = await listen(server, '127.0.0.1');
    try {
      const r = await get(`http://127.0.0.1:${port}/status.json`);
      assert.equal(r.status, 200, r.body.slice(0, 300));
      const view = (JSON.parse(r.body) as { names: Array<Record<string, any>> }).names[0]!;
      assert.deepEqual([view.lastError.type, typeof view.lastError.message, view.lastError.code], ['42', 'string', '10']);
      assert.ok(view.lastError.detail.length <= 2001);
      assert.equal(view.nextAttemptAt, undefined);
      assert.equal(view.certificate.notAfter, undefined, 'a time no Date can hold is left out');
      assert.deepEqual([view.certificate.serial, view.certificate.issuer, view.certificate.issuerId, view.certificate.names], ['7', 'Symbol(issuer)', '', ['odd.example', '5']]);
      assert.equal(view.extra.nested.deeper, '1', 'unknown fields stay, as plain data');
      assert.ok(r.body.length < 20_000, `bounded (${r.body.length} bytes)`);
      const page = await get(`http://127.0.0.1:${port}/`);
      assert.equal(page.status, 200);
    } finally {
      handler.close();
      await close(server);
    }
  });
});

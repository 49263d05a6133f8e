/**
 * The servers Pebble's VA dials, on loopback: an HTTP server for HTTP-01
 * (tokens of acme-client's `auto()` first, then the engine's
 * `httpChallengeHandler()`), and the TLS server the bench's clients connect
 * to, carrying the engine's `tlsOptions()`.
 */
import http from 'node:http';
import type net from 'node:net';
import tls from 'node:tls';
import type { CertEngine } from '../../src/engine/engine.js';

export interface VaServers {
  httpPort: number;
  tlsPort: number;
  /** HTTP-01 key authorizations published by `auto()`'s challengeCreateFn, by token. */
  autoTokens: Map<string, string>;
  /** Point both servers at an engine. */
  use(engine: CertEngine): void;
  close(): Promise<void>;
}

const PREFIX = '/.well-known/acme-challenge/';

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 1024, resolve));
  return (server.address() as net.AddressInfo).port;
}

export async function startVaServers(): Promise<VaServers> {
  const autoTokens = new Map<string, string>();
  let route: { http: http.RequestListener; tls: tls.TlsOptions } | undefined;
  const httpServer = http.createServer((req, res) => {
    const token = req.url?.startsWith(PREFIX) ? req.url.slice(PREFIX.length) : undefined;
    const auto = token === undefined ? undefined : autoTokens.get(token);
    if (auto !== undefined) return res.end(auto);
    if (route) return route.http(req, res);
    res.statusCode = 404;
    res.end();
  });
  // No default certificate: everything through the engine (TLS-ALPN-01 needs that, see tls-alpn-01.ts).
  const tlsServer = tls.createServer({
    SNICallback(this: tls.TLSSocket, servername, cb) {
      const sni = route?.tls.SNICallback as ((this: tls.TLSSocket, n: string, cb: (e: Error | null, c?: tls.SecureContext) => void) => void) | undefined;
      if (!sni) return cb(new Error('bench: no engine'));
      sni.call(this, servername, cb);
    },
    ALPNCallback(this: tls.TLSSocket, info: { servername: string; protocols: string[] }) {
      const alpn = (route?.tls as { ALPNCallback?: (this: tls.TLSSocket, i: typeof info) => string | undefined } | undefined)?.ALPNCallback;
      if (alpn) return alpn.call(this, info);
      return info.protocols.includes('http/1.1') ? 'http/1.1' : undefined;
    },
  } as tls.TlsOptions);
  tlsServer.on('tlsClientError', () => {});
  tlsServer.on('secureConnection', (socket) => {
    socket.on('error', () => {});
    socket.end();
  });
  const sockets = new Set<net.Socket>();
  for (const server of [httpServer, tlsServer]) {
    server.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
  }
  const httpPort = await listen(httpServer);
  const tlsPort = await listen(tlsServer);
  return {
    httpPort,
    tlsPort,
    autoTokens,
    use(engine) {
      route = { http: engine.httpChallengeHandler() as http.RequestListener, tls: engine.tlsOptions() as tls.TlsOptions };
    },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([httpServer, tlsServer].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}

export interface HandshakeResult {
  ok: boolean;
  ms: number;
  /** Issuer DN of the certificate the server presented. */
  issuer?: string;
  error?: string;
}

/** One full TLS handshake for `servername`, timed from connect to `secureConnect` (bounded by `timeoutMs`). */
export function timedHandshake(port: number, servername: string, timeoutMs = 60_000): Promise<HandshakeResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    const finish = (result: HandshakeResult) => {
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.setTimeout(0);
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => finish({ ok: false, ms: performance.now() - t0, error: 'client timeout' }));
    socket.once('secureConnect', () => {
      const ms = performance.now() - t0;
      finish({ ok: true, ms, issuer: socket.getPeerX509Certificate()?.issuer.replace(/\n/g, ', ') });
    });
    socket.once('error', (error) => finish({ ok: false, ms: performance.now() - t0, error: error.message }));
  });
}

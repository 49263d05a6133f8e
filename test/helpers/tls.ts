/**
 * Real TLS on loopback for tests: a server whose SNI callback is the engine's
 * (instrumented), and a client that reports what each handshake got.
 */
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { CertEngine } from '../../src/engine/engine.js';
import { chooseProtocol } from '../../src/adapters/challenges/tls-alpn-01.js';
import { keys } from '../../src/storage-keys.js';
import { parseCertificateBundle } from '../../src/certs.js';
import { serializeStoredCertificate } from '../../src/engine/stored.js';
import type { CertificateBundle, Storage } from '../../src/types.js';

/** What the server's SNI callback answered, one entry per callback call. */
export interface SniAnswer {
  servername: string;
  error?: Error;
  /** When the SNI callback was called and when it was answered (Date.now()). */
  askedAt: number;
  at: number;
}

export interface TestTlsServer {
  port: number;
  answers: SniAnswer[];
  /** SNI callbacks called so far (answered or still waiting). */
  readonly asked: number;
  close(): Promise<void>;
}

type SniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;
type AlpnCallback = (this: tls.TLSSocket | undefined, info: { servername: string | false; protocols: string[] }) => string | undefined;

/**
 * The engine's `tlsOptions()` callbacks, except that the SNI callback passes
 * the engine's refusal as its error (the engine itself answers a refusal with
 * no context, so that the client gets a TLS alert): for tests that check why
 * a handshake was refused. A server using it resets refused clients.
 */
export function refusalsAsErrors(engine: CertEngine, options: { protocols?: string[] } = {}): { SNICallback: SniCallback; ALPNCallback: AlpnCallback } {
  let refusal: Error | undefined;
  // onRefusal runs right before the engine's cb(null), in the same tick: no other answer comes between.
  const { SNICallback, ALPNCallback, ALPNProtocols } = engine.tlsOptions({ ...options, onRefusal: (error) => (refusal = error) });
  return {
    // An engine with no use for the JS callback gives ALPNProtocols: the same choice, as a callback for servers routed to several engines.
    ALPNCallback: ALPNCallback ?? ((info) => chooseProtocol(ALPNProtocols ?? [], info.protocols)),
    SNICallback(this: tls.TLSSocket | undefined, servername, cb) {
      SNICallback.call(this, servername, (err, ctx) => {
        const error = err ?? (ctx ? null : (refusal ?? null));
        refusal = undefined;
        cb(error, ctx);
      });
    },
  };
}

/** A TLS server on 127.0.0.1 answering SNI from the engine. */
export async function startTlsServer(engine: CertEngine): Promise<TestTlsServer> {
  const answers: SniAnswer[] = [];
  let asked = 0;
  const { SNICallback } = refusalsAsErrors(engine);
  const server = tls.createServer({
    // Node calls it as a method of the TLSSocket: keep that `this` (the engine reads the peer's address from it).
    SNICallback(this: tls.TLSSocket, servername, cb) {
      const askedAt = Date.now();
      asked++;
      SNICallback.call(this, servername, (err, ctx) => {
        answers.push({ servername, askedAt, at: Date.now(), ...(err ? { error: err } : {}) });
        cb(err, ctx);
      });
    },
  });
  server.on('tlsClientError', () => {}); // refused handshakes are expected in these tests
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    port: (server.address() as AddressInfo).port,
    answers,
    get asked() {
      return asked;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Outcome of one client handshake. */
export type ClientResult = { ok: true; fingerprint: string; notAfter: number } | { ok: false; error: string };

/** Connect, handshake with `servername`, report the peer certificate or the error, close. */
export function handshake(port: number, servername: string, ca?: string): Promise<ClientResult> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: ca !== undefined, ...(ca ? { ca } : {}) });
    socket.setTimeout(60_000, () => socket.destroy(new Error('client timeout')));
    socket.once('secureConnect', () => {
      const peer = socket.getPeerX509Certificate();
      resolve(peer ? { ok: true, fingerprint: peer.fingerprint256, notAfter: Date.parse(peer.validTo) } : { ok: false, error: 'no peer certificate' });
      socket.destroy();
    });
    socket.once('error', (error) => resolve({ ok: false, error: error.message }));
  });
}

/** Store a certificate unit directly, as a previous run would have left it. */
export async function seedCertificate(storage: Storage, name: string, bundle: CertificateBundle, issuerId = 'seed'): Promise<void> {
  const meta = parseCertificateBundle(bundle, issuerId);
  await storage.store(keys.certificate(name), serializeStoredCertificate(bundle, meta, Date.now()));
}

/** What one connection made of a session: resumed or not, the session to resume next, and what the server wrote. */
export interface ResumeResult {
  reused: boolean;
  session: Buffer | undefined;
  data: string;
}

/**
 * Connect (offering `session` when given), read until the server closes, and
 * report whether the session was resumed and the newest session the server
 * gave (TLS 1.3 sends tickets after the handshake; TLS 1.2 renews them inside it).
 */
export function connectResuming(port: number, options: { session?: Buffer; servername?: string; maxVersion?: tls.SecureVersion } = {}): Promise<ResumeResult> {
  return new Promise((resolve, reject) => {
    let latest: Buffer | undefined;
    let reused = false;
    let data = '';
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: options.servername ?? 'app.localhost',
      rejectUnauthorized: false,
      ...(options.maxVersion ? { maxVersion: options.maxVersion } : {}),
      ...(options.session ? { session: options.session } : {}),
    });
    socket.on('session', (s: Buffer) => (latest = s));
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused();
      latest = socket.getSession();
    });
    socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
    socket.once('error', reject);
    socket.once('close', () => resolve({ reused, session: latest, data }));
  });
}

/**
 * The herd over real TLS on loopback: K clients (in a worker thread) connect
 * at once for the expired name; once the server holds all K SNI callbacks,
 * the attempt ends, and we time, server-side, from that moment to the last
 * SNI answer. Baseline: a bare server that parks the same K callbacks and
 * then answers them all in one loop (a ready context, or an error).
 */
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { runWorker } from '../lib/children.js';
import type { HerdClientJob, HerdClientReport } from './tls-client.js';
import type { Outcome } from './in-process.js';
import { expiredScenario, HERD_NAME } from './scenario.js';

type SniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;

export interface TlsHerdRun {
  server: 'certstate' | 'baseline';
  outcome: Outcome;
  connections: number;
  attempts: number;
  /** SNI callbacks the server answered (must equal `connections`: each exactly once). */
  answered: number;
  /** From the attempt's end (or the baseline's release) to the last SNI answer, ms. */
  lastAnswerAfterEndMs: number;
  clientOk: number;
  clientFailed: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`tls herd: ${what} within ${timeoutMs} ms`);
    await sleep(5);
  }
}

export async function tlsHerdRun(server: 'certstate' | 'baseline', outcome: Outcome, connections: number): Promise<TlsHerdRun> {
  const sc = await expiredScenario(connections);
  let asked = 0;
  let answered = 0;
  let lastAnswer = 0;
  const parked: Array<(err: Error | null, ctx?: tls.SecureContext) => void> = [];
  const freshContext = tls.createSecureContext({ cert: sc.fresh.certificatePem, key: sc.fresh.privateKeyPem });
  const inner: SniCallback =
    server === 'certstate' ? (sc.engine.tlsOptions() as { SNICallback: SniCallback }).SNICallback : (_name, cb) => parked.push(cb);
  const tlsServer = tls.createServer({
    SNICallback(servername, cb) {
      asked++;
      inner.call(this, servername, (err, ctx) => {
        answered++;
        lastAnswer = performance.now();
        cb(err, ctx);
      });
    },
  });
  tlsServer.on('tlsClientError', () => {}); // refused handshakes are the point of the failing herd
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', 4096, resolve));
  const sockets = new Set<import('node:net').Socket>();
  tlsServer.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  try {
    const job: HerdClientJob = { port: (tlsServer.address() as AddressInfo).port, servername: HERD_NAME, connections, timeoutMs: 120_000 };
    const clients = runWorker<HerdClientReport>(new URL('./tls-client.ts', import.meta.url), job, 180_000);
    await until(() => asked >= connections, 120_000, `only ${asked}/${connections} handshakes reached SNI`);
    let endAt: number;
    if (server === 'certstate') {
      endAt = sc.issuer.settle(outcome === 'fail' ? { error: 'bench: CA unavailable' } : { bundle: sc.fresh });
    } else {
      endAt = performance.now();
      // A refusal as certstate answers one: no context, so the client gets a TLS alert.
      for (const cb of parked.splice(0)) outcome === 'fail' ? cb(null) : cb(null, freshContext);
    }
    await until(() => answered >= connections, 60_000, `only ${answered}/${connections} SNI callbacks answered`);
    const report = await clients;
    return {
      server,
      outcome,
      connections,
      attempts: sc.issuer.calls,
      answered,
      lastAnswerAfterEndMs: lastAnswer - endAt,
      clientOk: report.ok,
      clientFailed: report.failed,
    };
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
    await sc.engine.stop();
  }
}

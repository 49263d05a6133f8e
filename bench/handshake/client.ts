/**
 * Worker thread: a TLS load client. Keeps `concurrency` handshakes in
 * flight against `port` for `seconds`, each a new connection with a random
 * SNI from `names` and no session to resume (or, with `session`, that session
 * every time), then reports and exits.
 *
 * Bounded: no new connection starts after the deadline, and each connection
 * has its own timeout, so the worker always ends.
 */
import tls from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';
import { seeded } from '../../test/helpers/seeded-random.js';

export interface ClientJob {
  port: number;
  names: string[];
  seconds: number;
  concurrency: number;
  seed: number;
  /** Offer ALPN like a browser would (`http/1.1`). */
  alpn: boolean;
  /**
   * Instead of random names for `seconds`: one handshake for each of
   * `names[i]` with `i % stride === offset`, then stop (a warm-up pass that
   * touches every name once).
   */
  each?: { offset: number; stride: number };
  /** A TLS session to resume at every connection (base64 of `tls` 'session' bytes); none: full handshakes. */
  session?: string;
}

export interface ClientReport {
  handshakes: number;
  errors: number;
  firstError?: string;
  /** From the first connection to the last completion (ms). */
  activeMs: number;
  /** Client-observed handshake latency (ms): median and 99th percentile. */
  p50Ms: number;
  p99Ms: number;
}

const job = workerData as ClientJob;
const CONNECT_TIMEOUT_MS = 10_000;

// Seeded (mulberry32): runs differ by seed but are reproducible.
const random = seeded(job.seed);
const session = job.session ? Buffer.from(job.session, 'base64') : undefined;
const latencies: number[] = [];
let errors = 0;
let firstError: string | undefined;
const started = performance.now();
const deadline = started + job.seconds * 1000;
let lastDone = started;

let cursor = job.each?.offset ?? 0;
/** The next name to connect for, or undefined when an `each` pass is complete. */
function nextName(): string | undefined {
  if (!job.each) return job.names[Math.floor(random() * job.names.length)]!;
  const name = job.names[cursor];
  cursor += job.each.stride;
  return name;
}

function once(servername: string): Promise<void> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const socket = tls.connect({
      host: '127.0.0.1',
      port: job.port,
      servername,
      rejectUnauthorized: false, // the server's CPU is measured, not the client's chain check
      ...(job.alpn ? { ALPNProtocols: ['http/1.1'] } : {}),
      ...(session ? { session } : {}),
    });
    const finish = (error?: Error) => {
      socket.removeAllListeners();
      socket.setTimeout(0);
      socket.on('error', () => {});
      // end(), not destroy(): in TLS 1.3 our Finished may still sit in the write
      // buffer when 'secureConnect' fires, and the server only counts (and pays
      // for) a handshake once it has read it.
      if (error) socket.destroy();
      else socket.end();
      lastDone = performance.now();
      if (error) {
        errors++;
        firstError ??= error.message;
      } else latencies.push(lastDone - t0);
      resolve();
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => finish(new Error('timeout')));
    socket.once('secureConnect', () => finish());
    socket.once('error', finish);
  });
}

async function lane(): Promise<void> {
  while (performance.now() < deadline) {
    const name = nextName();
    if (name === undefined) return;
    await once(name);
  }
}

await Promise.all(Array.from({ length: job.concurrency }, lane));
latencies.sort((a, b) => a - b);
const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
const report: ClientReport = {
  handshakes: latencies.length,
  errors,
  ...(firstError ? { firstError } : {}),
  activeMs: lastDone - started,
  p50Ms: at(0.5),
  p99Ms: at(0.99),
};
parentPort!.postMessage(report);

/**
 * Worker thread: open `connections` TLS connections for one SNI name at once
 * (a herd), wait for every handshake's outcome (each bounded by a timeout),
 * report how many succeeded and failed, and exit.
 */
import tls from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';

export interface HerdClientJob {
  port: number;
  servername: string;
  connections: number;
  timeoutMs: number;
}

export interface HerdClientReport {
  ok: number;
  failed: number;
  firstError?: string;
}

const job = workerData as HerdClientJob;
let ok = 0;
let failed = 0;
let firstError: string | undefined;

function one(): Promise<void> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port: job.port, servername: job.servername, rejectUnauthorized: false });
    const finish = (error?: Error) => {
      socket.removeAllListeners();
      socket.setTimeout(0);
      socket.on('error', () => {});
      socket.destroy();
      if (error) {
        failed++;
        firstError ??= error.message;
      } else ok++;
      resolve();
    };
    socket.setTimeout(job.timeoutMs, () => finish(new Error('client timeout')));
    socket.once('secureConnect', () => finish());
    socket.once('error', finish);
  });
}

await Promise.all(Array.from({ length: job.connections }, one));
const report: HerdClientReport = { ok, failed, ...(firstError ? { firstError } : {}) };
parentPort!.postMessage(report);

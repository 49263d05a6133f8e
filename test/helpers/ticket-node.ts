/**
 * A child process for the session-ticket cluster test: one engine on a
 * manual clock, sharing storage with its siblings, behind a TLS server
 * created from `engine.tlsOptions()` and attached with `attachServer()`.
 * Run by `forkTs(this file, [id])` (the id makes each child's argv differ,
 * as real processes' do, so Node's default session id context differs too).
 *
 * Calls: `start(TicketNodeConfig)` → `{ port }`; `advance(ms)` moves the
 * clock and waits for the session-ticket storage step it caused; `stop()`.
 * Logs (pino, debug) go to `logFile`, for the test to search for secrets.
 */
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { pino } from 'pino';
import { serveRpc } from '../../bench/lib/children.js';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { ManualClock } from '../../src/clock.js';
import { createCertEngine, type CertEngine } from '../../src/engine/engine.js';
import type { Storage } from '../../src/types.js';
import { openNodeStorage, type NodeStorageConfig } from './cluster-node.js';

export interface TicketNodeConfig {
  storage: NodeStorageConfig | { kind: 'file'; dir: string };
  /** The manual clock's start, ms since epoch (the same in every child). */
  startAt: number;
  rotationIntervalMs: number;
  overlapMs: number;
  logFile: string;
}

let engine: CertEngine | undefined;
let server: tls.Server | undefined;
let storage: Storage | undefined;
let clock: ManualClock | undefined;

serveRpc({
  async start(config: TicketNodeConfig): Promise<{ port: number }> {
    const id = process.argv[2] ?? 'node';
    storage = config.storage.kind === 'file' ? fileStorage(config.storage.dir) : await openNodeStorage(config.storage, id);
    clock = new ManualClock(config.startAt);
    const logger = pino({ level: 'debug', base: { node: id } }, pino.destination({ dest: config.logFile, sync: true }));
    engine = createCertEngine({
      storage,
      clock,
      logger,
      issuers: [localCaIssuer()],
      names: ['app.localhost'],
      sessionTickets: { rotationIntervalMs: config.rotationIntervalMs, overlapMs: config.overlapMs },
    });
    await engine.start();
    server = tls.createServer({ ...engine.tlsOptions() }, (socket) => socket.end(id));
    engine.attachServer(server);
    server.on('tlsClientError', () => {});
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return { port: (server.address() as AddressInfo).port };
  },
  async advance(ms: number): Promise<void> {
    clock!.advance(ms);
    await engine!._maintenanceSettled();
  },
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await engine?.stop();
    await storage?.close?.();
  },
});

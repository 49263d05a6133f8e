/**
 * Child process: one TLS server in one of three modes, measuring its own CPU.
 *
 *   static     plain `tls.createServer` with one certificate (SNI ignored)
 *   map        a bare `Map<name, SecureContext>` in `SNICallback`
 *   map-alpn-callback  the same Map, with protocol selection in a JS
 *              `ALPNCallback` as certstate's TLS-ALPN-01 support requires
 *              (optional: separates that cost from the engine's)
 *   static-like, map-like  the baselines configured as `engine.tlsOptions()`
 *              configures a server that answers TLS-ALPN-01: protocol
 *              selection in a JS `ALPNCallback`, a fixed `sessionIdContext`,
 *              and session tickets encrypted through the same ticket-key
 *              callback (ticket-key-callback.ts) with one key; what is left
 *              between them and certstate-tls-alpn is the engine's own work
 *   static-tickets  the same without the ALPN callback (`ALPNProtocols`), as
 *              `tlsOptions()` configures a server that answers no TLS-ALPN-01
 *   map-tickets  the Map configured as `tlsOptions()` configures a server that
 *              answers no TLS-ALPN-01 (`ALPNProtocols`, the ticket-key
 *              callback, a fixed `sessionIdContext`): certstate's own baseline
 *   map-pem-strings, map-pem-buffers  map-tickets holding 10,000 PEM-sized
 *              (7 KB) values besides, as V8 strings or as `Buffer`s: what a
 *              heap of cached PEMs costs a handshake (BENCHMARKS.md,
 *              "Handshake CPU and the heap")
 *   certstate  `engine.tlsOptions()` of an engine managing every name, its
 *              issuer answering no challenge on the server (`ALPNProtocols`)
 *   certstate-tls-alpn  the same with `tlsOptions({ tlsAlpn01: true })`: the
 *              JS ALPN callback that answers TLS-ALPN-01 (what an issuer that
 *              may use it gets)
 *   certstate-backoff  the same, every name in `failed-backoff` with its
 *              still-valid certificate (the CA refused its renewal: the
 *              normal state of every name during a CA outage)
 *
 * Run in its own process so that `process.cpuUsage()` between `begin` and
 * `end` is the server's work only (every thread of it: OpenSSL, GC), never
 * the load client's.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import tls from 'node:tls';
import { fileStorage } from '../../src/adapters/storage/file.js';
import type { CertEngine } from '../../src/engine/engine.js';
import { serializeFailureRecord } from '../../src/engine/stored.js';
import { keys } from '../../src/storage-keys.js';
import type { Storage } from '../../src/types.js';
import { randomBytes } from 'node:crypto';
import { SESSION_ID_CONTEXT } from '../../src/engine/session-tickets.js';
import { compileTicketKeys, installTicketKeyCallback } from '../../src/engine/ticket-key-callback.js';
import { serveRpc } from '../lib/children.js';
import { engineModule, refusingIssuer } from '../lib/engine-module.js';
import { ensureDataset, fileStorageDir, type Dataset } from '../lib/dataset.js';
import { memoryAfterGc } from '../lib/memory.js';

export type Mode = 'static' | 'static-tickets' | 'static-like' | 'map' | 'map-tickets' | 'map-pem-strings' | 'map-pem-buffers' | 'map-alpn-callback' | 'map-like' | 'certstate' | 'certstate-tls-alpn' | 'certstate-backoff';

export interface SetupReply {
  port: number;
  /** Time to load the names into this server (ms). */
  loadMs: number;
  /** Time of the first `getCertificate` of every name (builds each SecureContext), certstate only (ms). */
  warmMs: number;
  memory: ReturnType<typeof memoryAfterGc>;
}

export interface EndReply {
  cpuUserUs: number;
  cpuSystemUs: number;
  handshakes: number;
  clientErrors: number;
  elapsedMs: number;
  /** Time spent in garbage collection (pauses, main thread) during the run, ms, and how much of it was full (mark-compact) GC. */
  gcMs: number;
  majorGcMs: number;
}

const ALPN = ['http/1.1'];
const ticketKey = randomBytes(48);
const ticketKeys = compileTicketKeys(ticketKey, [{ key: ticketKey, renew: false }]);


let server: tls.Server | undefined;
let engine: CertEngine | undefined;
let handshakes = 0;
let clientErrors = 0;
let cpuStart = process.cpuUsage();
let gcMs = 0;
let majorGcMs = 0;
// A bigger heap (one actor per name) makes every full GC longer: count GC time so a difference can be explained.
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcMs += entry.duration;
    if (((entry as PerformanceEntry & { detail?: { kind?: number } }).detail)?.kind === 4 /* NODE_PERFORMANCE_GC_MAJOR */) majorGcMs += entry.duration;
  }
}).observe({ entryTypes: ['gc'] });
let timeStart = performance.now();
/** `--profile-dir=<dir>`: a CPU profile of each begin → end window, written there (the bench's --profile). */
const profileDir = process.argv.find((a) => a.startsWith('--profile-dir='))?.slice('--profile-dir='.length);
let profiler: Session | undefined;
let profileMode = '';
let windows = 0;

async function unitOf(dataset: Dataset, name: string): Promise<{ certificatePem: string; privateKeyPem: string }> {
  return JSON.parse(await readFile(dataset.unitPath(name), 'utf8')) as { certificatePem: string; privateKeyPem: string };
}

/** What `engine.tlsOptions()` adds to a server besides the SNI callback: a JS ALPN callback and a fixed session id context (the ticket-key callback is installed on the server). */
const likeCertstate = {
  ALPNCallback: ({ protocols }: { protocols: string[] }) => (protocols.includes(ALPN[0]!) ? ALPN[0] : undefined),
  sessionIdContext: SESSION_ID_CONTEXT,
};

async function serverOptions(mode: Mode, dataset: Dataset): Promise<{ options: tls.TlsOptions; warmMs: number }> {
  if (mode === 'static' || mode === 'static-like' || mode === 'static-tickets') {
    const unit = await unitOf(dataset, dataset.names[0]!);
    const certificate = { cert: unit.certificatePem, key: unit.privateKeyPem };
    if (mode === 'static-tickets') return { options: { ...certificate, ALPNProtocols: ALPN, sessionIdContext: SESSION_ID_CONTEXT }, warmMs: 0 };
    return { options: mode === 'static' ? { ...certificate, ALPNProtocols: ALPN } : ({ ...certificate, ...likeCertstate } as tls.TlsOptions), warmMs: 0 };
  }
  if (mode.startsWith('map')) {
    const contexts = new Map<string, tls.SecureContext>();
    for (const name of dataset.names) {
      const unit = await unitOf(dataset, name);
      contexts.set(name, tls.createSecureContext({ cert: unit.certificatePem, key: unit.privateKeyPem }));
    }
    const SNICallback = (name: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => cb(null, contexts.get(name));
    if (mode === 'map') return { options: { SNICallback, ALPNProtocols: ALPN }, warmMs: 0 };
    if (mode === 'map-pem-strings' || mode === 'map-pem-buffers') heldPems.push(...pemSizedValues(contexts.size, mode === 'map-pem-buffers'));
    if (mode === 'map-tickets' || mode === 'map-pem-strings' || mode === 'map-pem-buffers') return { options: { SNICallback, ALPNProtocols: ALPN, sessionIdContext: SESSION_ID_CONTEXT }, warmMs: 0 };
    if (mode === 'map-like') return { options: { SNICallback, ...likeCertstate } as tls.TlsOptions, warmMs: 0 };
    const ALPNCallback = ({ protocols }: { protocols: string[] }) => (protocols.includes(ALPN[0]!) ? ALPN[0] : undefined);
    return { options: { SNICallback, ALPNCallback } as tls.TlsOptions, warmMs: 0 };
  }
  // File storage over the dataset, as a server keeps it: a memory storage would hold every stored value in the heap (~50 MB of strings at 10,000 names) and charge the engine for it.
  storageDir = await fileStorageDir(dataset);
  const storage = fileStorage(storageDir.dir);
  const backoff = mode === 'certstate-backoff';
  // Renewal due at once (renewal at a millionth of the lifetime), and a CA failure whose backoff has not ended: failed-backoff, serving.
  if (backoff) await seedFailures(storage, dataset.names);
  const { createCertEngine } = await engineModule();
  // The issuer answers no challenge on this server (as a local CA, or ACME with HTTP-01 or DNS-01 only).
  engine = createCertEngine({ storage, issuers: [{ ...refusingIssuer('handshake'), challenges: [] }], names: dataset.names, ...(backoff ? { timing: { renewRatio: 1e-6, shortLivedRenewRatio: 1e-6, renewJitter: 0, minRenewalIntervalMs: 0 } } : {}) });
  await engine.start();
  const wrong = engine.status().filter((s) => s.state !== (backoff ? 'failed-backoff' : 'valid'));
  if (wrong.length > 0) throw new Error(`${mode}: ${wrong.length} names in ${wrong[0]!.state}, not the state measured`);
  // Steady state is what the bar measures: build every SecureContext now (the
  // engine builds one lazily at a name's first handshake) and time it apart.
  const warmStart = performance.now();
  for (const name of dataset.names) await engine.getCertificate(name);
  const warmMs = performance.now() - warmStart;
  // Steady state: the start-up's background work done (the start-up index checked against every file and written,
  // the storage cleaner's first pass, the ticket keys), as on a server that has run a while; else the runs pay for it.
  await backgroundDone(engine);
  // tlsOptions() brings ALPNProtocols, or the ALPNCallback that answers TLS-ALPN-01 (Node refuses both).
  const options = engine.tlsOptions({ protocols: ALPN, ...(mode === 'certstate-tls-alpn' ? { tlsAlpn01: true } : {}) }) as tls.TlsOptions & { ALPNCallback?: unknown };
  if (Boolean(options.ALPNCallback) !== (mode === 'certstate-tls-alpn')) throw new Error(`${mode}: tlsOptions() chose ${options.ALPNCallback ? 'the ALPN callback' : 'ALPNProtocols'}, not the configuration measured`);
  return { options, warmMs };
}

/** Values held for the server's life by the map-pem-* modes. */
const heldPems: unknown[] = [];
/** The certstate servers' storage directory (hard links into the dataset). */
let storageDir: { dir: string; dispose(): Promise<void> } | undefined;

/** `count` distinct flat 7 KB ASCII values (a PEM chain and key's size), as strings or as Buffers. */
function pemSizedValues(count: number, asBuffers: boolean): unknown[] {
  const values: unknown[] = [];
  for (let i = 0; i < count; i++) {
    const text = `${i}:${'A'.repeat(7_000)}`;
    values.push(asBuffers ? Buffer.from(text, 'latin1') : Buffer.from(text, 'latin1').toString('latin1')); // flat, not a rope
  }
  return values;
}

/**
 * The engine's maintenance settled and the process quiet (under 5 % of a core over 500 ms: the start-up index's
 * check and write, the storage cleaner's first pass are done, whichever of them this engine runs); at most 2 minutes.
 */
async function backgroundDone(e: CertEngine): Promise<void> {
  await (e as { _maintenanceSettled?: () => Promise<void> })._maintenanceSettled?.();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const before = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 500));
    const used = process.cpuUsage(before);
    if ((used.user + used.system) / 1000 < 25) return;
  }
}

/** A failure record per name, its backoff a day away. */
async function seedFailures(storage: Storage, names: string[]): Promise<void> {
  const lastError = { type: 'AcmeError', message: 'bench: the CA refused the renewal', at: Date.now() };
  const record = serializeFailureRecord({ attempts: 1, lastError, nextAttemptAt: Date.now() + 86_400_000 });
  for (const name of names) await storage.store(keys.failure(name), record);
}

serveRpc({
  async setup({ mode, names }: { mode: Mode; names: number }): Promise<SetupReply> {
    profileMode = mode;
    const dataset = await ensureDataset(names);
    const loadStart = performance.now();
    const { options, warmMs } = await serverOptions(mode, dataset);
    const loadMs = performance.now() - loadStart - warmMs;
    server = tls.createServer(options);
    // The -like and -tickets baselines' session tickets go through certstate's ticket-key callback, with one fixed key.
    if ((mode.endsWith('-like') || mode.endsWith('-tickets') || mode.startsWith('map-pem-')) && !installTicketKeyCallback(server, () => ticketKeys)) throw new Error(`${mode}: this Node has no ticket-key callback`);
    server.on('secureConnection', (socket) => {
      handshakes++;
      socket.on('error', () => {}); // clients hang up right after the handshake
      socket.destroy();
    });
    server.on('tlsClientError', () => clientErrors++);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', 1024, resolve));
    return { port: (server.address() as AddressInfo).port, loadMs, warmMs, memory: memoryAfterGc() };
  },
  async begin(): Promise<void> {
    if (profileDir) {
      profiler ??= new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    handshakes = 0;
    clientErrors = 0;
    gcMs = 0;
    majorGcMs = 0;
    timeStart = performance.now();
    cpuStart = process.cpuUsage();
  },
  async end(): Promise<EndReply> {
    const cpu = process.cpuUsage(cpuStart);
    const reply = { cpuUserUs: cpu.user, cpuSystemUs: cpu.system, handshakes, clientErrors, elapsedMs: performance.now() - timeStart, gcMs, majorGcMs };
    if (profiler && profileDir) {
      const { profile } = await profiler.post('Profiler.stop');
      profiler.disconnect();
      await mkdir(profileDir, { recursive: true });
      // Window 0 is the one-handshake-per-name pass; then one per measured run.
      await writeFile(path.join(profileDir, `${profileMode}-${windows++}.cpuprofile`), JSON.stringify(profile));
    }
    return reply;
  },
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await engine?.stop();
    await storageDir?.dispose();
  },
});

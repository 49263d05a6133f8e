/**
 * Real clusters for tests: one certstate engine per child process, sharing
 * one Redis or PostgreSQL storage and one Pebble.
 *
 * This file has two roles:
 *
 * - **Run as a child** (`node --import tsx cluster-node.ts`, with the JSON
 *   config in `CERTSTATE_CLUSTER_NODE`): start an engine with on-demand
 *   issuance from Pebble, an HTTPS server on `engine.tlsOptions()` and an HTTP
 *   server on `engine.httpChallengeHandler()`, then report over IPC (what it
 *   issues, what it stores, what its engine emits) and obey requests
 *   (`forceRenew`, `get`, `status`, `slow`, `stop`). Logs are pino JSON lines
 *   on stdout.
 * - **Imported by a test**: `startNode()` forks such a child and returns a
 *   handle; plus the tools a cluster test needs around it (a round-robin
 *   HTTP proxy for Pebble's VA, a severable TCP proxy in front of a storage
 *   server, a verifying TLS client, probes of the storage servers).
 *
 * The issuer inside a child can be made slow on request: it sleeps *after*
 * the CA has issued and *before* `issue()` returns, i.e. while the process
 * holds the storage lock and has not stored yet. That is the window in which
 * the tests SIGKILL or SIGSTOP the holder.
 *
 * Children are always killed by their own handle (never by name); a child
 * exits by itself when its parent goes away (IPC disconnect).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { X509Certificate, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { startPebble, type PebbleHandle } from './pebble.js';
import { POSTGRES_URL, REDIS_URL, purgeRedisPrefix, withPostgres, withRedis } from './backends.js';

// ─── Shared shapes ─────────────────────────────────────────────────────────

/** Where a node's storage lives. */
export type NodeStorageConfig =
  | { kind: 'redis'; url: string; prefix: string }
  | { kind: 'postgres'; connectionString: string; table: string }
  | { kind: 'file'; dir: string };

/** Configuration of one child (passed as JSON in `CERTSTATE_CLUSTER_NODE`). */
export interface NodeConfig {
  /** A label for logs and assertions, e.g. `n0`. */
  id: string;
  storage: NodeStorageConfig;
  /** Pebble's directory URL and the CA of its HTTPS listener. */
  directoryUrl: string;
  caBundlePem: string;
  /** On-demand issuance is allowed for names ending with this. */
  allowSuffix: string;
  /** Lease of the issuance lock (`lockTtlMs`). */
  lockTtlMs: number;
  /** `handshakeTimeout` of the engine. */
  handshakeTimeout: number;
  /** Storage `operationTimeoutMs` (default 5000). */
  operationTimeoutMs?: number;
  /** pino level (default `info`). */
  logLevel?: string;
  /** Extra environment of the child, e.g. libfaketime's `LD_PRELOAD` and `FAKETIME` to step its clock. */
  env?: Record<string, string>;
}

/** What a child tells its parent. */
export type NodeMessage =
  | { type: 'ready'; pid: number; httpsPort: number; httpPort: number }
  /** The issuer was called: this process holds the issuance lock for `name`. */
  | { type: 'issuing'; name: string; at: number }
  /** The CA issued (the slow issuer now sleeps before returning). */
  | { type: 'issued'; name: string; fingerprint: string; at: number }
  /** The slow issuer is done sleeping and returns the certificate to the engine (which stores it next). */
  | { type: 'returning'; name: string; at: number }
  /** File storage: a fenced write of `key` passed its checks and is about to publish; the process stops itself (SIGSTOP) now. */
  | { type: 'committing'; key: string; at: number }
  /** A write of a certificate unit: stored, or refused by fencing, or failed otherwise. */
  | { type: 'store'; key: string; outcome: 'ok' | 'fenced' | 'error'; errorType?: string; at: number }
  /** An engine event (`cert_obtained`, `cert_renewed`, `cert_failed`). */
  | { type: 'engine'; event: string; name: string; fingerprint?: string; adopted?: boolean; errorType?: string; at: number }
  | { type: 'reply'; id: string; ok: true; value: unknown }
  | { type: 'reply'; id: string; ok: false; error: { type: string; message: string; code?: string; lastErrorCode?: string; lastErrorProblemType?: string } };

/** Requests a parent can make. */
export type NodeRequest =
  | { op: 'forceRenew'; name: string }
  | { op: 'get'; name: string }
  | { op: 'status' }
  /** What the engine's `handshake` events say about handshakes between `since` and `until` (epoch ms), optionally for some names only. */
  | { op: 'handshakes'; since: number; until: number; names?: string[] }
  /** One storage round trip; rejects with the storage's typed error. */
  | { op: 'probe' }
  /** Make the issuer sleep up to `ms` after the CA issued, before returning (0: off). */
  | { op: 'slow'; ms: number }
  /** End every such sleep now; answers how many were sleeping. */
  | { op: 'release' }
  /** File storage: the next fenced write of `key` stops this process (SIGSTOP) between its checks and its publish. */
  | { op: 'freezeAtCommit'; key: string }
  | { op: 'stop' };

/** What `handshakes` answers: counts by the engine's own verdict, and the longest wait. */
export interface HandshakeSummary {
  immediate: number;
  waited: number;
  failed: number;
  maxWaitedMs: number;
}

/** What `get` answers: the certificate the engine serves for a name. */
export interface ServedInfo {
  fingerprint: string;
  notAfter: number;
}

// ═══ Child side ═════════════════════════════════════════════════════════════

/** A child's connection to the shared storage (`id` names its Redis connection). */
export async function openNodeStorage(
  config: NodeStorageConfig,
  id: string,
  operationTimeoutMs = 5000,
  fileHooks?: { beforeRename?(tempPath: string): void | Promise<void> },
): Promise<import('../../src/types.js').Storage & { close(): Promise<void> }> {
  if (config.kind === 'redis') {
    const { redisStorage } = await import('../../src/adapters/storage/redis.js');
    return redisStorage({ url: config.url, prefix: config.prefix, operationTimeoutMs, redisOptions: { connectionName: `certstate-${id}` } });
  }
  if (config.kind === 'postgres') {
    const { postgresStorage } = await import('../../src/adapters/storage/postgres.js');
    return postgresStorage({ connectionString: config.connectionString, table: config.table, operationTimeoutMs });
  }
  const { fileStorage } = await import('../../src/adapters/storage/file.js');
  return { close: async () => {}, ...fileStorage(config.dir, fileHooks ? { testHooks: fileHooks } : {}) };
}

async function runChild(config: NodeConfig): Promise<void> {
  const { pino } = await import('pino');
  const { createCertEngine } = await import('../../src/engine/engine.js');
  const { acmeIssuer } = await import('../../src/adapters/issuers/acme.js');
  const { FencingError } = await import('../../src/errors.js');
  type Storage = import('../../src/types.js').Storage;
  type Issuer = import('../../src/types.js').Issuer;

  const send = (message: NodeMessage) => {
    if (process.connected) process.send!(message);
  };
  // The parent is gone: do not linger as an orphan holding locks and ports.
  process.on('disconnect', () => process.exit(3));

  const logger = pino({ level: config.logLevel ?? 'info', base: { node: config.id } }, pino.destination({ fd: 1, sync: true }));
  const operationTimeoutMs = config.operationTimeoutMs ?? 5000;

  /** Armed by `freezeAtCommit`: the key whose next fenced write stops this process just before it publishes. */
  let freezeKey: string | undefined;
  const fileHooks = {
    async beforeRename(tempPath: string) {
      if (freezeKey === undefined || !tempPath.includes(`${path.sep}${freezeKey.split('/').join(path.sep)}~v${path.sep}`)) return;
      const key = freezeKey;
      freezeKey = undefined;
      // Tell the parent first (the message must leave before we stop), then freeze right here.
      await new Promise<void>((resolve) => (process.connected ? process.send!({ type: 'committing', key, at: Date.now() } satisfies NodeMessage, () => resolve()) : resolve()));
      process.kill(process.pid, 'SIGSTOP');
    },
  };
  const storage = await openNodeStorage(config.storage, config.id, operationTimeoutMs, fileHooks);

  // Report every write of a certificate unit, and whether fencing refused it.
  const reporting: Storage = {
    ...storage,
    async store(key, value, options) {
      try {
        await storage.store(key, value, options);
        if (key.startsWith('certificates/')) send({ type: 'store', key, outcome: 'ok', at: Date.now() });
      } catch (error) {
        if (key.startsWith('certificates/')) {
          send({ type: 'store', key, outcome: error instanceof FencingError ? 'fenced' : 'error', errorType: (error as Error).name, at: Date.now() });
        }
        throw error;
      }
    },
  };

  const acme = acmeIssuer({ directoryUrl: config.directoryUrl, email: 'cluster@example.com', agreeToTerms: true, caBundle: config.caBundlePem, challenges: ['http-01'] });
  let slowMs = 0;
  /** Sleeping slow issuances, woken by `release`. */
  const releases = new Set<() => void>();
  const issuer: Issuer = {
    id: acme.id,
    async issue(request, context) {
      const name = request.names[0]!;
      send({ type: 'issuing', name, at: Date.now() });
      const bundle = await acme.issue(request, context);
      send({ type: 'issued', name, fingerprint: new X509Certificate(bundle.certificatePem).fingerprint256, at: Date.now() });
      // The window the tests aim at: issued by the CA, lock held, not stored.
      if (slowMs > 0) {
        // Until `slowMs` has passed or the parent says `release`, whichever comes first.
        await new Promise<void>((resolve, reject) => {
          const done = () => {
            clearTimeout(timer);
            releases.delete(done);
            context.signal.removeEventListener('abort', aborted);
            resolve();
          };
          const aborted = () => {
            done();
            reject(context.signal.reason);
          };
          const timer = setTimeout(done, slowMs);
          releases.add(done);
          context.signal.addEventListener('abort', aborted, { once: true });
        });
        send({ type: 'returning', name, at: Date.now() });
      }
      return bundle;
    },
  };

  const engine = createCertEngine({
    storage: reporting,
    issuers: [issuer],
    onDemand: { decide: (name) => name.endsWith(config.allowSuffix) },
    handshakeTimeout: config.handshakeTimeout,
    lockTtlMs: config.lockTtlMs,
    logger,
    stopTimeoutMs: 3000,
  });
  for (const type of ['cert_obtained', 'cert_renewed'] as const) {
    engine.on(type, (e) => send({ type: 'engine', event: type, name: e.name, fingerprint: e.certificate.fingerprint, adopted: e.adopted, at: Date.now() }));
  }
  engine.on('cert_failed', (e) => send({ type: 'engine', event: 'cert_failed', name: e.name, errorType: e.error.type, at: Date.now() }));
  // Every handshake as the engine saw it: served at once from memory, or after waiting, or refused.
  const handshakeLog: { at: number; name: string; outcome: 'immediate' | 'waited' | 'failed'; waitedMs: number }[] = [];
  engine.on('handshake', (e) => {
    if (handshakeLog.length < 200_000) handshakeLog.push({ at: Date.now(), name: e.name, outcome: e.outcome, waitedMs: e.waitedMs });
  });
  await engine.start();

  // Refused handshakes are part of the tests: log why (the client only sees a TLS alert).
  const onRefusal = (error: Error & { code?: string }, servername: string) =>
    logger.info({ servername, refusal: { type: error.name, message: error.message, code: error.code } }, 'handshake refused');
  const httpsServer = https.createServer({ ...engine.tlsOptions({ onRefusal }) }, (_req, res) => res.end(config.id));
  httpsServer.on('tlsClientError', () => {}); // OpenSSL's side of the refusals above, and clients hanging up on purpose
  const httpServer = http.createServer(engine.httpChallengeHandler());
  await Promise.all([httpsServer, httpServer].map((s) => new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))));

  const handlers: { [K in NodeRequest['op']]: (request: Extract<NodeRequest, { op: K }>) => Promise<unknown> } = {
    forceRenew: async ({ name }) => {
      const meta = await engine.forceRenew(name);
      return { fingerprint: meta.fingerprint, notAfter: meta.notAfter } satisfies ServedInfo;
    },
    get: async ({ name }) => {
      const served = await engine.getCertificate(name);
      return { fingerprint: served.meta.fingerprint, notAfter: served.meta.notAfter } satisfies ServedInfo;
    },
    status: async () => engine.status(),
    handshakes: async ({ since, until, names }) => {
      const summary: HandshakeSummary = { immediate: 0, waited: 0, failed: 0, maxWaitedMs: 0 };
      for (const h of handshakeLog) {
        if (h.at < since || h.at > until || (names && !names.includes(h.name))) continue;
        summary[h.outcome]++;
        summary.maxWaitedMs = Math.max(summary.maxWaitedMs, h.waitedMs);
      }
      return summary;
    },
    probe: async () => {
      // One storage round trip, straight through the node's storage (no engine state involved).
      await storage.list('certificates/');
      return true;
    },
    slow: async ({ ms }) => {
      slowMs = ms;
      return ms;
    },
    freezeAtCommit: async ({ key }) => {
      freezeKey = key;
      return true;
    },
    release: async () => {
      const n = releases.size;
      for (const done of [...releases]) done();
      return n;
    },
    stop: async () => {
      await engine.stop();
      await storage.close();
      httpsServer.closeAllConnections?.();
      httpServer.closeAllConnections();
      await Promise.all([httpsServer, httpServer].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      setImmediate(() => process.exit(0));
      return true;
    },
  };
  process.on('message', (message: { id: string } & NodeRequest) => {
    const handler = handlers[message.op] as (r: NodeRequest) => Promise<unknown>;
    handler(message).then(
      (value) => send({ type: 'reply', id: message.id, ok: true, value }),
      (error: unknown) => {
        const e = error as { name?: string; message?: string; code?: unknown; cause?: unknown; lastError?: { code?: unknown; problemType?: unknown } };
        const code = typeof e.code === 'string' ? e.code : undefined;
        // A CertificateUnavailableError's own code is fixed; the attempt's error says why.
        const lastErrorCode = typeof e.lastError?.code === 'string' ? e.lastError.code : undefined;
        const lastErrorProblemType = typeof e.lastError?.problemType === 'string' ? e.lastError.problemType : undefined;
        const reply = {
          type: e.name ?? 'Error',
          message: String(e.message ?? error),
          ...(code ? { code } : {}),
          ...(lastErrorCode ? { lastErrorCode } : {}),
          ...(lastErrorProblemType ? { lastErrorProblemType } : {}),
        };
        send({ type: 'reply', id: message.id, ok: false, error: reply });
      },
    );
  });
  send({ type: 'ready', pid: process.pid, httpsPort: (httpsServer.address() as net.AddressInfo).port, httpPort: (httpServer.address() as net.AddressInfo).port });
}

// ═══ Parent side ════════════════════════════════════════════════════════════

/** One parsed pino line of a child (or `{ msg: <raw> }` for anything else it printed). */
export type LogLine = Record<string, unknown> & { level?: number; msg?: string; time?: number };

/** A child engine process. */
export interface ClusterNode {
  readonly id: string;
  readonly pid: number;
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly child: ChildProcess;
  /** Every message the child sent, in order (replies excluded). */
  readonly messages: (NodeMessage & { receivedAt: number })[];
  /** Every log line, parsed. */
  readonly logs: LogLine[];
  /** Raw stderr. */
  stderr(): string;
  /** Ask the child; rejects with the child's error (its `type` in `name`) or after `timeoutMs`. */
  request<T = unknown>(request: NodeRequest, timeoutMs?: number): Promise<T>;
  /** Resolve with the first message (already received or future) matching `match`. */
  waitFor<M extends NodeMessage>(match: (m: NodeMessage) => m is M, timeoutMs?: number): Promise<M & { receivedAt: number }>;
  waitFor(match: (m: NodeMessage) => boolean, timeoutMs?: number): Promise<NodeMessage & { receivedAt: number }>;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Graceful stop (engine.stop), then SIGKILL if it takes longer than 5 s. Idempotent. */
  stop(): Promise<void>;
  /** Send a signal. */
  signal(signal: NodeJS.Signals): void;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // Synchronous last resort: a test that crashed still leaves no engine behind.
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // gone
      }
    }
  });
}

/** The error a child's failed request rejects with: `name` is the child's error type. */
export class NodeRequestError extends Error {
  readonly code: string | undefined;
  /** For a `CertificateUnavailableError`: the code of the attempt's error, and the CA's problem type if a CA refused. */
  readonly lastErrorCode: string | undefined;
  readonly lastErrorProblemType: string | undefined;
  constructor(error: { type: string; message: string; code?: string; lastErrorCode?: string; lastErrorProblemType?: string }) {
    super(error.message);
    this.name = error.type;
    this.code = error.code;
    this.lastErrorCode = error.lastErrorCode;
    this.lastErrorProblemType = error.lastErrorProblemType;
  }
}

/** Fork a child engine and wait until it serves. */
export async function startNode(config: NodeConfig, { readyTimeoutMs = 20_000 } = {}): Promise<ClusterNode> {
  installExitHook();
  const script = fileURLToPath(import.meta.url);
  const child = fork(script, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...config.env, CERTSTATE_CLUSTER_NODE: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const messages: (NodeMessage & { receivedAt: number })[] = [];
  const logs: LogLine[] = [];
  let stderr = '';
  let partial = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => (stderr += chunk));

  const pending = new Map<string, { resolve(v: unknown): void; reject(e: unknown): void }>();
  const watchers = new Set<{ match(m: NodeMessage): boolean; resolve(m: NodeMessage & { receivedAt: number }): void }>();
  child.on('message', (message: NodeMessage) => {
    if (message.type === 'reply') {
      const waiter = pending.get(message.id);
      pending.delete(message.id);
      if (waiter) message.ok ? waiter.resolve(message.value) : waiter.reject(new NodeRequestError(message.error));
      return;
    }
    const stamped = { ...message, receivedAt: Date.now() };
    messages.push(stamped);
    for (const w of [...watchers]) {
      if (w.match(message)) {
        watchers.delete(w);
        w.resolve(stamped);
      }
    }
  });
  child.once('exit', (code, signal) => {
    for (const [, w] of pending) w.reject(new Error(`node ${config.id} exited (${code ?? signal}) before answering`));
    pending.clear();
  });

  const ready = await new Promise<Extract<NodeMessage, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${config.id} not ready within ${readyTimeoutMs} ms\n${stderr}`)), readyTimeoutMs);
    const onExit = (code: number | null, signal: string | null) => {
      clearTimeout(timer);
      reject(new Error(`node ${config.id} exited (${code ?? signal}) before it was ready\n${stderr}\n${logs.map((l) => JSON.stringify(l)).join('\n')}`));
    };
    child.once('exit', onExit);
    child.on('message', function onReady(m: NodeMessage) {
      if (m.type !== 'ready') return;
      clearTimeout(timer);
      child.off('exit', onExit);
      child.off('message', onReady);
      resolve(m);
    });
  }).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });

  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const exit = new Promise<void>((resolve) => (exited() ? resolve() : child.once('exit', () => resolve())));
  let stopping: Promise<void> | undefined;

  const node: ClusterNode = {
    id: config.id,
    pid: ready.pid,
    httpsPort: ready.httpsPort,
    httpPort: ready.httpPort,
    child,
    messages,
    logs,
    stderr: () => stderr,
    exited,
    request<T>(request: NodeRequest, timeoutMs = 30_000): Promise<T> {
      if (exited() || !child.connected) return Promise.reject(new Error(`node ${config.id} is not running`));
      const id = randomUUID();
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`node ${config.id}: no answer to ${request.op} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        child.send({ id, ...request });
      });
    },
    waitFor: ((match: (m: NodeMessage) => boolean, timeoutMs = 30_000) => {
      const found = messages.find((m) => match(m));
      if (found) return Promise.resolve(found);
      return new Promise<NodeMessage & { receivedAt: number }>((resolve, reject) => {
        const entry = {
          match,
          resolve: (m: NodeMessage & { receivedAt: number }) => {
            clearTimeout(timer);
            resolve(m);
          },
        };
        const timer = setTimeout(() => {
          watchers.delete(entry);
          reject(new Error(`node ${config.id}: awaited message not seen within ${timeoutMs} ms`));
        }, timeoutMs);
        watchers.add(entry);
      });
    }) as ClusterNode['waitFor'],
    stop() {
      stopping ??= (async () => {
        if (exited()) return;
        // A stopped (SIGSTOP) child cannot answer: wake it first.
        child.kill('SIGCONT');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        try {
          await node.request({ op: 'stop' }, 5000).catch(() => child.kill('SIGKILL'));
          await exit;
        } finally {
          clearTimeout(killer);
        }
      })();
      return stopping;
    },
    signal(signal) {
      child.kill(signal);
    },
  };
  return node;
}

/**
 * Run a test body; if it throws, write every node's logs, messages and stderr
 * to a file in the temp dir and add its path to the error (children's output
 * is otherwise silent, to keep the test output readable). With
 * `CERTSTATE_CLUSTER_LOGS=1` the logs of passing tests are kept too.
 */
export async function withNodeLogs<T>(nodes: () => Iterable<ClusterNode | undefined>, body: () => Promise<T>): Promise<T> {
  const dump = () => {
    const file = path.join(os.tmpdir(), `certstate-cluster-${runId()}.log`);
    const parts: string[] = [];
    for (const node of nodes()) {
      if (!node) continue;
      parts.push(`===== ${node.id} (pid ${node.pid}) messages`, ...node.messages.map((m) => JSON.stringify(m)));
      parts.push(`===== ${node.id} logs`, ...node.logs.map((l) => JSON.stringify(l)));
      parts.push(`===== ${node.id} stderr`, node.stderr());
    }
    writeFileSync(file, parts.join('\n'));
    return file;
  };
  let result: T;
  try {
    result = await body();
  } catch (error) {
    const file = dump();
    if (error instanceof Error) error.message += `\n(cluster node logs: ${file})`;
    throw error;
  }
  // CERTSTATE_CLUSTER_LOGS=1 keeps the logs of passing tests too.
  if (process.env.CERTSTATE_CLUSTER_LOGS) console.log(`# cluster node logs: ${dump()}`);
  return result;
}

/** The first node to report `match`, and that message. */
export function firstToReport<M extends NodeMessage>(nodes: ClusterNode[], match: (m: NodeMessage) => m is M, timeoutMs = 20_000) {
  return Promise.race(nodes.map((node) => node.waitFor(match, timeoutMs).then((message) => ({ node, message }))));
}

/** Message matchers for one name: the CA issued, the issuer was called, a certificate write with this outcome. */
export const isIssued = (name: string) => (m: NodeMessage): m is Extract<NodeMessage, { type: 'issued' }> => m.type === 'issued' && m.name === name;
export const isIssuing = (name: string) => (m: NodeMessage): m is Extract<NodeMessage, { type: 'issuing' }> => m.type === 'issuing' && m.name === name;
export const isStore = (name: string, outcome: 'ok' | 'fenced' | 'error') => (m: NodeMessage): m is Extract<NodeMessage, { type: 'store' }> =>
  m.type === 'store' && m.key === `certificates/${name}.json` && m.outcome === outcome;

/** Stop every node (in parallel), whatever state they are in. */
export async function stopNodes(nodes: Iterable<ClusterNode | undefined>): Promise<void> {
  await Promise.all([...nodes].map((n) => n?.stop()));
}

// ─── The round-robin HTTP proxy in front of the nodes' challenge servers ───

/** One request the proxy forwarded. */
export interface ProxiedRequest {
  host: string;
  path: string;
  /** Index of the backend that answered. */
  backend: number;
  status: number;
}

/** What the cluster test files share: one Pebble, whose VA reaches the nodes through a round-robin proxy. */
export interface ClusterCa {
  proxy: Awaited<ReturnType<typeof startRoundRobinProxy>>;
  /** Undefined when Pebble is not installed (then `pebbleSkip` says so). */
  pebble: PebbleHandle | undefined;
  pebbleSkip: false | string;
  /** Pebble's root, to verify the certificates the nodes serve. */
  rootPem: string;
}

/** Start the file's Pebble and proxy, both stopped after the file's tests. Call at module level. */
export async function startClusterCa(): Promise<ClusterCa> {
  const proxy = await startRoundRobinProxy();
  const pebble = await startPebble({ httpPort: proxy.port, certificateValidityPeriod: 3600 });
  after(async () => {
    await pebble?.stop();
    await proxy.close();
  });
  return {
    proxy,
    pebble,
    pebbleSkip: pebble ? false : 'pebble is not installed (apt-get install pebble)',
    rootPem: pebble ? await pebble.rootsPem(0) : '',
  };
}

/** A node's configuration on the file's Pebble: on-demand names ending in `suffix`, a 30 s handshake timeout. */
export function nodeConfigFor(pebble: PebbleHandle, id: string, storage: NodeStorageConfig, suffix: string, lockTtlMs: number, extra: Partial<NodeConfig> = {}): NodeConfig {
  return { id, storage, directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem, allowSuffix: suffix, lockTtlMs, handshakeTimeout: 30_000, ...extra };
}

/** `count` nodes `n0`, `n1`, … with one configuration, started at once. */
export function startNodes(count: number, config: Omit<NodeConfig, 'id'>): Promise<ClusterNode[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startNode({ id: `n${i}`, ...config })));
}

/**
 * Pebble's VA dials one HTTP port: this proxy spreads its requests over the
 * nodes in turn, so a challenge is answered by whichever process it reaches,
 * not necessarily the one that placed the order.
 */
export async function startRoundRobinProxy(): Promise<{
  port: number;
  requests: ProxiedRequest[];
  setBackends(ports: number[]): void;
  /** Hosts whose validation requests get a 404 (a name whose DNS points elsewhere). */
  broken: Set<string>;
  close(): Promise<void>;
}> {
  let backends: number[] = [];
  let next = 0;
  const broken = new Set<string>();
  const requests: ProxiedRequest[] = [];
  const server = http.createServer((req, res) => {
    // Challenge validations are bodiless GETs: read the request, then forward it,
    // trying the next backend when one cannot be reached or stalls (as a load balancer would).
    req.resume();
    const host = String(req.headers.host ?? '').replace(/:\d+$/, '');
    const path = req.url ?? '';
    const forward = (tries: number) => {
      if (broken.has(host)) {
        requests.push({ host, path, backend: -1, status: 404 });
        res.statusCode = 404;
        return res.end('validation broken on purpose');
      }
      if (backends.length === 0 || tries >= backends.length) {
        requests.push({ host, path, backend: -1, status: 502 });
        res.statusCode = 502;
        return res.end('no backend answered');
      }
      const backend = next++ % backends.length;
      const upstream = http.request({ host: '127.0.0.1', port: backends[backend], method: req.method, path, headers: req.headers, agent: false }, (up) => {
        requests.push({ host, path, backend, status: up.statusCode ?? 0 });
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      // A stalled backend (a SIGSTOPped process still accepts TCP) is skipped after 1 s.
      upstream.setTimeout(1000, () => upstream.destroy(new Error('backend timeout')));
      upstream.on('error', () => {
        if (!res.headersSent) forward(tries + 1);
        else res.destroy();
      });
      upstream.end();
    };
    req.on('end', () => forward(0));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    requests,
    setBackends(ports) {
      backends = [...ports];
    },
    broken,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ─── A TCP proxy in front of a storage server, which a test can sever ─────

/** A TCP proxy whose connections can be cut and refused, as a crashed or restarted server would. */
export interface SeverableProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Destroy every open connection; while `down`, new ones are reset at once. */
  sever(options?: { down?: boolean }): void;
  /**
   * Blackhole: connections stay open but no byte passes either way (new ones
   * are accepted and held too), as in a network partition; `false` lets the
   * held bytes through, late, as TCP would after the partition heals.
   */
  blackhole(on: boolean): void;
  /** Accept and forward connections again. */
  restore(): void;
  close(): Promise<void>;
}

export async function startSeverableProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<SeverableProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let down = false;
  let holding = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    if (down) {
      client.resetAndDestroy();
      return;
    }
    accepted++;
    const upstream = net.connect(targetPort, targetHost);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
    if (holding) {
      client.pause();
      upstream.pause();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    sever(options = {}) {
      down = options.down ?? false;
      for (const [client, upstream] of [...pairs]) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    restore() {
      down = false;
    },
    blackhole(on) {
      holding = on;
      for (const [client, upstream] of pairs) {
        if (on) {
          client.pause();
          upstream.pause();
        } else {
          client.resume();
          upstream.resume();
        }
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [client, upstream] of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}

// ─── A verifying TLS client ───────────────────────────────────────────────

/** Outcome of one client handshake. */
export type HandshakeResult =
  | { ok: true; fingerprint: string; ms: number; authorized: true }
  | { ok: false; error: string; code?: string; ms: number };

/**
 * Connect to `port`, send `servername`, and verify the chain against `ca`
 * (Pebble's root) and the name, as a browser would.
 */
export function verifiedHandshake(port: number, servername: string, ca: string, timeoutMs = 45_000): Promise<HandshakeResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ca, ALPNProtocols: ['http/1.1'], rejectUnauthorized: true });
    let done = false;
    const finish = (result: HandshakeResult) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => finish({ ok: false, error: 'client timeout', code: 'ETIMEDOUT', ms: performance.now() - started }));
    socket.once('secureConnect', () => {
      const peer = socket.getPeerX509Certificate();
      if (!peer || !socket.authorized) return finish({ ok: false, error: `not authorized: ${String(socket.authorizationError)}`, ms: performance.now() - started });
      finish({ ok: true, fingerprint: peer.fingerprint256, ms: performance.now() - started, authorized: true });
    });
    socket.once('error', (error: NodeJS.ErrnoException) => finish({ ok: false, error: error.message, ...(error.code ? { code: error.code } : {}), ms: performance.now() - started }));
  });
}

// ─── Storage servers for the tests ─────────────────────────────────────────

export { POSTGRES_URL, REDIS_URL, backendSkip, postgresProblem, redisProblem } from './backends.js';

/** Remove what a test run left in its storage (its own Redis prefix, or its own tables). */
export async function dropStorage(storage: NodeStorageConfig): Promise<void> {
  if (storage.kind === 'file') return rm(storage.dir, { recursive: true, force: true });
  if (storage.kind === 'redis') return withRedis(storage.url, (client) => purgeRedisPrefix(client, storage.prefix));
  await withPostgres(storage.connectionString, (client) => client.query(`DROP TABLE IF EXISTS "${storage.table}", "${storage.table}_locks", "${storage.table}_index"`));
}

/** Read a name's stored certificate fingerprint straight from the backend (not through any engine). */
export async function storedFingerprint(storage: NodeStorageConfig, name: string): Promise<string | undefined> {
  const key = `certificates/${name}.json`;
  const raw =
    storage.kind === 'file'
      ? await (await import('../../src/adapters/storage/file.js')).fileStorage(storage.dir).load(key)
      : storage.kind === 'redis'
      ? await withRedis(storage.url, async (client) => (await client.hget(`${storage.prefix}data:${key}`, 'v')) ?? undefined)
      : await withPostgres(storage.connectionString, async (client) => {
          const { rows } = await client.query<{ value: Buffer }>(`SELECT value FROM "${storage.table}" WHERE key = $1`, [key]);
          return rows[0]?.value.toString('utf8');
        });
  if (raw === undefined) return undefined;
  const unit = JSON.parse(raw) as { certificatePem: string };
  return new X509Certificate(unit.certificatePem).fingerprint256;
}

/** A fresh, collision-free run id for prefixes, tables and names. */
export function runId(): string {
  return randomUUID().replace(/-/g, '').slice(0, 10);
}

/** Host and port of the Redis or PostgreSQL server the tests use (what a severable proxy forwards to). */
export function storageServer(kind: 'redis' | 'postgres'): { host: string; port: number } {
  const url = new URL(kind === 'redis' ? REDIS_URL : POSTGRES_URL);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port) || (kind === 'redis' ? 6379 : 5432) };
}

/** Storage config for one test run on `kind`, behind `port` when given (a severable proxy). */
export function storageFor(kind: 'redis' | 'postgres', run: string, port?: number): NodeStorageConfig {
  if (kind === 'redis') {
    const url = new URL(REDIS_URL);
    if (port !== undefined) url.port = String(port);
    return { kind, url: url.toString(), prefix: `certstate-cluster-${run}:` };
  }
  const url = new URL(POSTGRES_URL);
  if (port !== undefined) url.port = String(port);
  url.searchParams.set('application_name', `certstate-cluster-${run}`);
  return { kind, connectionString: url.toString(), table: `cluster_${run}` };
}

/** Poll `check` every `everyMs` until it returns a value other than `undefined`, or fail after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ''}`);
    await delay(everyMs);
  }
}

// ─── Entry point when run as a child ──────────────────────────────────────

if (process.env.CERTSTATE_CLUSTER_NODE && process.send) {
  const config = JSON.parse(process.env.CERTSTATE_CLUSTER_NODE) as NodeConfig;
  runChild(config).catch((error: unknown) => {
    process.stderr.write(`cluster node ${config.id} failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(2);
  });
}

/**
 * Real faults against real clusters (issue 16): engine processes on Redis,
 * PostgreSQL or one directory, one Pebble, and the faults a Jepsen-style test
 * injects — a partition (a TCP proxy that blackholes or resets one process's
 * storage connections), a storage restart that loses its data, SIGSTOP /
 * SIGCONT, a clock stepped with libfaketime in one process, a certificate of
 * a shorter lifetime stored by someone else.
 *
 * Every test asserts what the cluster promises: the number of orders per
 * name, that the stored certificate never goes back to an older one, that
 * every process serves the stored certificate within a bound, and no crash.
 * (No unhandled rejection: a child that had one would exit, and `stopNodes`
 * would then find it gone — checked at the end of each test.)
 *
 * Leases are short (1.5 s) and issuance is slowed on purpose inside the lock
 * (see cluster-node.ts), so that a fault lands while a process holds a name.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { redisStorage } from '../src/adapters/storage/redis.js';
import { seedCertificate } from './helpers/tls.js';
import { withPostgres } from './helpers/backends.js';
import {
  backendSkip,
  dropStorage,
  eventually,
  isIssued,
  isIssuing,
  isStore,
  nodeConfigFor,
  runId,
  startClusterCa,
  startNode,
  startSeverableProxy,
  stopNodes,
  storageFor,
  storageServer,
  storedFingerprint,
  verifiedHandshake,
  withNodeLogs,
  POSTGRES_URL,
  type ClusterNode,
  type NodeConfig,
  type NodeStorageConfig,
  type ServedInfo,
} from './helpers/cluster-node.js';
import { assertConverged, assertNoFailure, watchStored } from './helpers/cluster-checks.js';

const LEASE_MS = 1500;
const SLOW_MS = 30_000; // always ended by the test (`release`)
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

const { proxy, pebble, pebbleSkip, rootPem } = await startClusterCa();

/** Environment that steps a child's clock by `offset` (libfaketime syntax, e.g. `+300s`). */
function clockStep(offset: string): Record<string, string> {
  return { LD_PRELOAD: LIBFAKETIME, FAKETIME: offset, FAKETIME_DONT_RESET: '1' };
}
const faketimeSkip = existsSync(LIBFAKETIME) ? false : 'libfaketime is not installed (apt-get install faketime)';
if (faketimeSkip && process.env.CI) throw new Error(`${faketimeSkip}; CI must provide it`);
// Every skip decided before any suite is declared: an `await` between two `describe`s would let the
// runner finish (and stop the file's Pebble) before the later suites exist.
const skips = { redis: pebbleSkip || (await backendSkip('redis')), postgres: pebbleSkip || (await backendSkip('postgres')) };
const ownRedisSkip = skips.redis || (existsSync('/usr/bin/redis-server') ? false : 'redis-server is not installed');
if (ownRedisSkip && !skips.redis && process.env.CI) throw new Error(`${ownRedisSkip}; CI must provide it`);

function nodeConfig(id: string, storage: NodeStorageConfig, suffix: string, extra: Partial<NodeConfig> = {}): NodeConfig {
  return nodeConfigFor(pebble!, id, storage, suffix, LEASE_MS, extra);
}

const ordersSince = (before: number) => pebble!.orderCount() - before;

// ─── 1. a storage blip during a lease renewal ───────────────────────────────

const BLIP_LEASE_MS = 3000;

for (const kind of ['redis', 'postgres'] as const) {
  describe(`a partition shorter than half the lease, on ${kind}`, { skip: skips[kind] }, () => {
    it('the holder keeps its lease (renewal retried within it); the other process orders nothing', async () => {
      const run = runId();
      const suffix = `.${run}.blip.example.com`;
      const server = storageServer(kind);
      const cut = await startSeverableProxy(server.port, server.host);
      const direct = storageFor(kind, run);
      const viaProxy = storageFor(kind, run, cut.port);
      // Twice the other tests' lease: a loaded machine's stalls must not be what loses it.
      const lease = BLIP_LEASE_MS;
      const nodes = await Promise.all([
        startNode(nodeConfig('n0', viaProxy, suffix, { operationTimeoutMs: 400, lockTtlMs: lease })),
        startNode(nodeConfig('n1', direct, suffix, { lockTtlMs: lease })),
      ]);
      proxy.setBackends(nodes.map((n) => n.httpPort));
      try {
        await withNodeLogs(() => nodes, async () => {
          const name = `blip${suffix}`;
          const orders = pebble!.orderCount();
          await nodes[0]!.request({ op: 'slow', ms: SLOW_MS });
          const first = verifiedHandshake(nodes[0]!.httpsPort, name, rootPem);
          await nodes[0]!.waitFor(isIssued(name));
          const second = verifiedHandshake(nodes[1]!.httpsPort, name, rootPem); // queues for the lock
          await delay(100);
          cut.blackhole(true);
          await delay(Math.round(lease * 0.45));
          cut.blackhole(false);
          // Hold the name well past the lease: only renewals keep it.
          await delay(lease * 2);
          assert.equal(await nodes[0]!.request<number>({ op: 'release' }), 1, 'n0 was still inside its issuance');
          const results = await Promise.all([first, second]);
          const stored = await assertConverged(nodes, direct, name);
          for (const r of results) assert.ok(r.ok && r.fingerprint === stored, JSON.stringify(r));
          assert.ok(!nodes[1]!.messages.some(isIssuing(name)), 'n1 did not take the lease over and order');
          assert.equal(ordersSince(orders), 1, 'one order');
        });
      } finally {
        await stopNodes(nodes);
        await cut.close();
        await dropStorage(direct);
      }
    });
  });
}

// ─── 2. Redis restarted without persistence while a holder is paused ────────

/** A Redis server of the test's own (on a free port, no persistence), which it may kill and restart. */
async function ownRedis(): Promise<{ url: string; restart(): Promise<void>; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-redis-'));
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    await eventually('own redis answers', () => promisify(execFile)('redis-cli', ['-p', String(port), 'ping']).then((r) => (r.stdout.includes('PONG') ? true : undefined)), 5_000, 50);
  };
  const kill = async () => {
    const dying = child;
    if (!dying || dying.exitCode !== null) return;
    const exited = new Promise((resolve) => dying.once('exit', resolve));
    dying.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    restart: async () => {
      await kill();
      await start();
    },
    stop: kill,
  };
}

describe('Redis restarted empty while the holder is paused (SIGSTOP)', { skip: ownRedisSkip }, () => {
  it('the paused holder\'s token from before the restart is refused: storage keeps the newer certificate, every process serves it', async () => {
    const redis = await ownRedis();
    const run = runId();
    const suffix = `.${run}.loss.example.com`;
    const storage: NodeStorageConfig = { kind: 'redis', url: redis.url, prefix: `certstate-loss-${run}:` };
    const nodes = await Promise.all([startNode(nodeConfig('n0', storage, suffix)), startNode(nodeConfig('n1', storage, suffix))]);
    proxy.setBackends(nodes.map((n) => n.httpPort));
    const [n0, n1] = nodes as [ClusterNode, ClusterNode];
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `loss${suffix}`;
        await n0.request({ op: 'slow', ms: SLOW_MS });
        const first = verifiedHandshake(n0.httpsPort, name, rootPem);
        await n0.waitFor(isIssued(name));
        n0.signal('SIGSTOP');
        proxy.setBackends([n1.httpPort]); // the load balancer drops the frozen process
        try {
          await redis.restart(); // every key gone: the lock, the fence counter
          const second = await verifiedHandshake(n1.httpsPort, name, rootPem);
          assert.ok(second.ok, JSON.stringify(second));
          const newer = await storedFingerprint(storage, name);
          assert.equal(newer, second.fingerprint);
          const history = watchStored(storage, name);
          await delay(LEASE_MS);
          n0.signal('SIGCONT');
          // Still sleeping inside its issuance, or already aborted because it saw its lease gone: either way it must not write.
          await n0.request<number>({ op: 'release' });
          const r = await first;
          assert.ok(r.ok && r.fingerprint === newer, `n0's handshake got the stored certificate: ${JSON.stringify(r)}`);
          assert.equal(await assertConverged(nodes, storage, name), newer, 'the paused holder overwrote nothing');
          assert.deepEqual(await history.done(), [newer]);
          assertNoFailure(n0, name);
        } finally {
          n0.signal('SIGCONT');
        }
      });
    } finally {
      await stopNodes(nodes);
      await redis.stop();
    }
  });
});

// ─── 5. fenced before the newer certificate is visible ──────────────────────

describe('a holder fenced out before the new holder has stored (Redis)', { skip: skips.redis }, () => {
  it('waits for the winner\'s certificate and serves it: no failure, no failure record, no ERR_FENCED to clients', async () => {
    const run = runId();
    const suffix = `.${run}.fenced.example.com`;
    const storage = storageFor('redis', run);
    const nodes = await Promise.all([startNode(nodeConfig('n0', storage, suffix)), startNode(nodeConfig('n1', storage, suffix))]);
    proxy.setBackends(nodes.map((n) => n.httpPort));
    const [n0, n1] = nodes as [ClusterNode, ClusterNode];
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `fenced${suffix}`;
        const orders = pebble!.orderCount();
        await Promise.all(nodes.map((n) => n.request({ op: 'slow', ms: SLOW_MS })));
        const onN0 = Array.from({ length: 3 }, () => verifiedHandshake(n0.httpsPort, name, rootPem));
        await n0.waitFor(isIssued(name));
        n0.signal('SIGSTOP');
        proxy.setBackends([n1.httpPort]); // the load balancer drops the frozen process
        try {
          const onN1 = verifiedHandshake(n1.httpsPort, name, rootPem);
          await n1.waitFor(isIssued(name), 15_000); // n1 took over and holds the name, not stored yet
          n0.signal('SIGCONT');
          await n0.request<number>({ op: 'release' }); // (it may have aborted already: its lease is gone)
          await delay(LEASE_MS); // n0 is fenced out now, while n1 still holds its certificate unstored
          assert.equal(await n1.request<number>({ op: 'release' }), 1);
          const results = await Promise.all([...onN0, onN1]);
          const stored = await assertConverged(nodes, storage, name);
          for (const r of results) assert.ok(r.ok && r.fingerprint === stored, JSON.stringify(r));
          assertNoFailure(n0, name);
          const reader = redisStorage(storage.kind === 'redis' ? { url: storage.url, prefix: storage.prefix } : { url: '' });
          const failureRecord = await reader.load(`failures/${name}.json`).finally(() => reader.close());
          // The issuance floor keeps the name's order times in that record; no failure may be in it.
          const record = failureRecord === undefined ? undefined : (JSON.parse(failureRecord) as { attempts?: number; lastError?: unknown });
          assert.ok(record === undefined || (record.lastError === undefined && !record.attempts), `no failure recorded: ${failureRecord}`);
          assert.equal(ordersSince(orders), 2, "two orders: the fenced holder's and the winner's");
        } finally {
          n0.signal('SIGCONT');
        }
      });
    } finally {
      await stopNodes(nodes);
      await dropStorage(storage);
    }
  });
});

// ─── 6. PostgreSQL fails on the final store ─────────────────────────────────

describe('PostgreSQL unreachable when the issued certificate is stored', { skip: skips.postgres }, () => {
  it('the store is retried with the same certificate: one order, no failure', async () => {
    const run = runId();
    const suffix = `.${run}.store.example.com`;
    const server = storageServer('postgres');
    const cut = await startSeverableProxy(server.port, server.host);
    const direct = storageFor('postgres', run);
    const nodes = [await startNode(nodeConfig('n0', storageFor('postgres', run, cut.port), suffix, { lockTtlMs: 4000, operationTimeoutMs: 500 }))];
    proxy.setBackends(nodes.map((n) => n.httpPort));
    const n0 = nodes[0]!;
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `store${suffix}`;
        const orders = pebble!.orderCount();
        await n0.request({ op: 'slow', ms: SLOW_MS });
        const pending = verifiedHandshake(n0.httpsPort, name, rootPem);
        const issued = await n0.waitFor(isIssued(name));
        cut.sever({ down: true }); // every connection reset, new ones refused
        assert.equal(await n0.request<number>({ op: 'release' }), 1);
        await n0.waitFor(isStore(name, 'error'), 5_000);
        await delay(700);
        cut.restore();
        const r = await pending;
        assert.ok(r.ok && r.fingerprint === issued.fingerprint, `served the issued certificate: ${JSON.stringify(r)}`);
        assert.equal(await assertConverged(nodes, direct, name), issued.fingerprint, 'the issued certificate was stored');
        assert.equal(ordersSince(orders), 1, 'one order');
        assertNoFailure(n0, name);
      });
    } finally {
      await stopNodes(nodes);
      await cut.close();
      await dropStorage(direct);
    }
  });
});

// ─── 6b. the engine's PostgreSQL backends terminated during an attempt ─────

describe("pg_terminate_backend on the holder's connections during its attempt", { skip: skips.postgres }, () => {
  it('no certificate lost, no second order: the holder stores after its connections are killed, every process serves it', async () => {
    const run = runId();
    const suffix = `.${run}.terminate.example.com`;
    const shared = storageFor('postgres', run);
    // n0's connections carry their own application_name, so that only they are terminated.
    const own = new URL((shared as { connectionString: string }).connectionString);
    own.searchParams.set('application_name', `certstate-terminate-${run}`);
    const n0Storage: NodeStorageConfig = { kind: 'postgres', connectionString: own.toString(), table: (shared as { table: string }).table };
    const nodes = await Promise.all([startNode(nodeConfig('n0', n0Storage, suffix, { lockTtlMs: 4000 })), startNode(nodeConfig('n1', shared, suffix, { lockTtlMs: 4000 }))]);
    proxy.setBackends(nodes.map((n) => n.httpPort));
    const [n0, n1] = nodes as [ClusterNode, ClusterNode];
    /** Terminate every backend of n0 (its pool's and its LISTEN connection); how many there were. */
    const terminate = () =>
      withPostgres(POSTGRES_URL, async (client) => {
        const { rows } = await client.query<{ n: number }>(
          'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
          [`certstate-terminate-${run}`],
        );
        return rows[0]!.n;
      });
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `term${suffix}`;
        const orders = pebble!.orderCount();
        await n0.request({ op: 'slow', ms: SLOW_MS });
        const first = verifiedHandshake(n0.httpsPort, name, rootPem);
        const issued = await n0.waitFor(isIssued(name));
        const second = verifiedHandshake(n1.httpsPort, name, rootPem); // queues for the lock
        assert.ok((await terminate()) > 0, "n0's backends were terminated while it holds the lease");
        await delay(300);
        await terminate(); // again, whatever it reconnected meanwhile (the lease renewal, the listener)
        assert.equal(await n0.request<number>({ op: 'release' }), 1, 'n0 was still inside its issuance');
        await terminate(); // and while it stores
        const results = await Promise.all([first, second]);
        const stored = await assertConverged(nodes, shared, name);
        assert.equal(stored, issued.fingerprint, "the issued certificate was stored, not lost");
        for (const r of results) assert.ok(r.ok && r.fingerprint === stored, JSON.stringify(r));
        assert.ok(!n1.messages.some(isIssuing(name)), 'n1 placed no order');
        assert.equal(ordersSince(orders), 1, 'one order');
        assertNoFailure(n0, name);
      });
    } finally {
      await stopNodes(nodes);
      await dropStorage(shared);
    }
  });
});

// ─── 7. adoption by identity ────────────────────────────────────────────────

describe('a certificate of a shorter lifetime stored by another process (Redis)', { skip: skips.redis }, () => {
  it('is adopted by every process (the stored one is current, whatever its notAfter)', async () => {
    const run = runId();
    const suffix = `.${run}.identity.example.com`;
    const storage = storageFor('redis', run);
    // No lease is tested here: a lease a loaded machine's stalls cannot lose (1.5 s could, mid-order).
    const nodes = await Promise.all([startNode(nodeConfig('n0', storage, suffix, { lockTtlMs: 15_000 })), startNode(nodeConfig('n1', storage, suffix, { lockTtlMs: 15_000 }))]);
    proxy.setBackends(nodes.map((n) => n.httpPort));
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `short${suffix}`;
        const issued = await verifiedHandshake(nodes[0]!.httpsPort, name, rootPem);
        assert.ok(issued.ok);
        await assertConverged(nodes, storage, name);
        // A renewal to a shorter profile (another process, an operator's tool): 10 minutes instead of Pebble's hour.
        const bundle = await localCaIssuer({ leafValidityMs: 10 * 60_000, keyBits: 2048 }).issue(
          { names: [name] },
          { signal: AbortSignal.timeout(30_000), logger: pino({ level: 'silent' }), storage: memoryStorage(), now: Date.now },
        );
        const served = await nodes[0]!.request<ServedInfo>({ op: 'get', name });
        const shorter = new X509Certificate(bundle.certificatePem);
        assert.ok(Date.parse(shorter.validTo) < served.notAfter, 'the new certificate ends before the served one');
        const writer = redisStorage(storage.kind === 'redis' ? { url: storage.url, prefix: storage.prefix } : { url: '' });
        await seedCertificate(writer, name, bundle, 'operator');
        await writer.close();
        for (const node of nodes) {
          await eventually(`${node.id} serves the stored certificate`, async () => ((await node.request<ServedInfo>({ op: 'get', name })).fingerprint === shorter.fingerprint256 ? true : undefined), 5_000);
        }
      });
    } finally {
      await stopNodes(nodes);
      await dropStorage(storage);
    }
  });
});

// ─── 8. shared backoff judged on the storage's clock ────────────────────────

describe('a process whose clock runs 5 minutes ahead (libfaketime), Redis', { skip: skips.redis || faketimeSkip }, () => {
  it('respects the backoff another process recorded: it places no order', async () => {
    const run = runId();
    const suffix = `.${run}.skew.example.com`;
    const storage = storageFor('redis', run);
    // No lease is tested here: a lease a loaded machine's stalls cannot lose (1.5 s could, mid-order).
    const nodes = await Promise.all([
      startNode(nodeConfig('n0', storage, suffix, { lockTtlMs: 15_000 })),
      startNode(nodeConfig('n1', storage, suffix, { lockTtlMs: 15_000, env: clockStep('+300s') })),
    ]);
    proxy.setBackends(nodes.map((n) => n.httpPort));
    const [n0, n1] = nodes as [ClusterNode, ClusterNode];
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `skew${suffix}`;
        proxy.broken.add(name); // validation fails: a CA verdict, with a 1-minute backoff
        const orders = pebble!.orderCount();
        const failed = await verifiedHandshake(n0.httpsPort, name, rootPem);
        assert.ok(!failed.ok, 'the first attempt fails');
        assert.equal(ordersSince(orders), 1);
        const skewed = await verifiedHandshake(n1.httpsPort, name, rootPem);
        assert.ok(!skewed.ok, 'the process with the fast clock is in backoff too');
        assert.ok(!n1.messages.some(isIssuing(name)), 'n1 placed no order');
        assert.equal(ordersSince(orders), 1, 'one order for the cluster');
        for (const node of nodes) assert.ok(!node.exited());
      });
    } finally {
      proxy.broken.clear();
      await stopNodes(nodes);
      await dropStorage(storage);
    }
  });
});

after(() => proxy.setBackends([]));

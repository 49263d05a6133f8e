/**
 * Real clusters: three engine processes (children running
 * test/helpers/cluster-node.ts) on one Redis, then on one PostgreSQL, with one
 * Pebble. Pebble's VA dials one HTTP port, so a round-robin proxy spreads its
 * challenge requests over the three processes: a challenge is answered by
 * whichever process it reaches, from the shared storage.
 *
 * - 300 concurrent handshakes spread over the three for 10 new on-demand
 *   names → exactly 10 orders; every handshake gets a certificate that
 *   verifies against Pebble's root; one ACME account for the cluster.
 * - A renewal by one process (forceRenew) is served by the other two within a
 *   bounded time (watch/notify), with exactly one order.
 * - A validation that fails costs one order for the whole cluster: the
 *   processes that waited on the lock take over the failure and its backoff.
 *
 * Without Pebble, Redis or PostgreSQL the suites skip loudly; under CI they fail.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { NameStatus } from '../src/types.js';
import {
  backendSkip,
  dropStorage,
  eventually,
  runId,
  startNodes,
  startClusterCa,
  stopNodes,
  storageFor,
  storedFingerprint,
  verifiedHandshake,
  withNodeLogs,
  type ClusterNode,
  type NodeRequestError,
  type NodeStorageConfig,
  type ServedInfo,
} from './helpers/cluster-node.js';

const { proxy, pebble, pebbleSkip, rootPem } = await startClusterCa();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
/** `node name error ×count` lines, for a readable failure message. */
function summarize(results: { node: string; name: string; ok: boolean; error?: string }[]): string {
  const counts = new Map<string, number>();
  for (const r of results) {
    const key = `${r.node} ${r.name} ${r.ok ? 'ok' : r.error}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `\n  ${k} ×${n}`).join('');
}
const max = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);

for (const kind of ['redis', 'postgres'] as const) {
  const skip = pebbleSkip || (await backendSkip(kind));

  describe(`three processes on one ${kind}, one Pebble`, { skip }, () => {
    const run = runId();
    const storage: NodeStorageConfig = storageFor(kind, run);
    const suffix = `.${run}.${kind}.example.com`;
    let nodes: ClusterNode[] = [];

    before(async () => {
      nodes = await startNodes(3, {
        storage,
        directoryUrl: pebble!.directoryUrl,
        caBundlePem: pebble!.caBundlePem,
        allowSuffix: suffix,
        lockTtlMs: 10_000,
        handshakeTimeout: 30_000,
      });
      proxy.setBackends(nodes.map((n) => n.httpPort));
    });

    after(async () => {
      proxy.setBackends([]);
      await stopNodes(nodes);
      await dropStorage(storage);
    });

    const names = Array.from({ length: 10 }, (_, i) => `site${i}${suffix}`);

    it('300 concurrent handshakes over 3 processes for 10 new on-demand names → exactly 10 orders, all certificates verify', () => withNodeLogs(() => nodes, async () => {
      const ordersBefore = pebble!.orderCount();
      const accountsBefore = pebble!.accountCount();
      const proxiedBefore = proxy.requests.length;
      const started = Date.now();
      // Handshake i goes to process i % 3 for name ⌊i/3⌋ % 10: every process sees every name 10 times.
      const results = await Promise.all(
        Array.from({ length: 300 }, (_, i) => {
          const node = nodes[i % 3]!;
          const name = names[Math.floor(i / 3) % 10]!;
          return verifiedHandshake(node.httpsPort, name, rootPem).then((r) => ({ ...r, node: node.id, name }));
        }),
      );
      const elapsed = Date.now() - started;

      const failed = results.filter((r) => !r.ok);
      assert.equal(failed.length, 0, `every handshake gets a certificate that verifies against Pebble's root (and the name); failed: ${summarize(failed)}`);
      assert.equal(pebble!.orderCount() - ordersBefore, 10, 'exactly one order per name in Pebble\'s log');
      assert.ok(pebble!.accountCount() - accountsBefore <= 1, 'one ACME account for the whole cluster');

      // One certificate per name, the same in every process, and the one in storage.
      for (const name of names) {
        const fingerprints = new Set(results.filter((r) => r.name === name).map((r) => (r.ok ? r.fingerprint : '')));
        assert.equal(fingerprints.size, 1, `${name}: one certificate served by all three processes`);
        assert.equal(await storedFingerprint(storage, name), [...fingerprints][0], `${name}: the stored one`);
      }

      // Exactly one process issued each name (the lock holder); the others adopted it.
      const issuers = new Map<string, string[]>();
      for (const node of nodes) for (const m of node.messages) if (m.type === 'issuing' && names.includes(m.name)) issuers.set(m.name, [...(issuers.get(m.name) ?? []), node.id]);
      for (const name of names) assert.equal(issuers.get(name)?.length, 1, `${name}: issued by one process (${issuers.get(name)?.join(', ')})`);

      // Challenges were answered through the proxy by all three processes, from storage:
      // for some names by a process other than the one that placed the order.
      const challenges = proxy.requests.slice(proxiedBefore).filter((r) => r.path.startsWith('/.well-known/acme-challenge/'));
      assert.ok(challenges.length >= 10, `at least one validation request per name (${challenges.length})`);
      assert.deepEqual(challenges.filter((c) => c.status !== 200), [], 'every validation request answered 200');
      assert.equal(new Set(challenges.map((c) => c.backend)).size, 3, 'all three processes answered challenges');
      const byOther = challenges.filter((c) => issuers.get(c.host)?.[0] !== nodes[c.backend]!.id);
      assert.ok(byOther.length > 0, 'some challenges were answered by a process that did not place the order');

      const ms = results.map((r) => r.ms);
      const perNode = Object.fromEntries(nodes.map((n) => [n.id, [...issuers.values()].filter((v) => v[0] === n.id).length]));
      console.log(
        `# ${kind}: 300 handshakes / 10 names in ${elapsed} ms; handshake median ${median(ms).toFixed(0)} ms, max ${max(ms).toFixed(0)} ms; ` +
          `orders per process ${JSON.stringify(perNode)}; ${challenges.length} validations, ${byOther.length} answered by a non-ordering process`,
      );
    }));

    it('a renewal by one process is served by the other two within a bounded time, with exactly one order', () => withNodeLogs(() => nodes, async () => {
      const name = names[0]!;
      const before = await Promise.all(nodes.map((n) => n.request<ServedInfo>({ op: 'get', name })));
      assert.equal(new Set(before.map((b) => b.fingerprint)).size, 1, 'all three serve one certificate before');
      // Pebble's validity has 1 s resolution: a renewal within the same second
      // would have the same notAfter, and "newer" is judged by notAfter.
      await delay(1100);
      const ordersBefore = pebble!.orderCount();

      const asked = Date.now();
      const renewed = await nodes[0]!.request<ServedInfo>({ op: 'forceRenew', name });
      const storedAt = Date.now();
      assert.notEqual(renewed.fingerprint, before[0]!.fingerprint, 'a new certificate');
      assert.equal(await storedFingerprint(storage, name), renewed.fingerprint, 'stored');

      // The other two learn of it from the storage's change notification, not from their own renewal.
      const seenAfter = await Promise.all(
        nodes.slice(1).map((node) =>
          eventually(
            `${node.id} serves the renewed certificate`,
            async () => {
              const r = await verifiedHandshake(node.httpsPort, name, rootPem);
              return r.ok && r.fingerprint === renewed.fingerprint ? Date.now() - storedAt : undefined;
            },
            5000,
            10,
          ),
        ),
      );
      assert.ok(max(seenAfter) < 2000, `served by the others within 2 s (took ${seenAfter.join(', ')} ms)`);
      // Give a late duplicate a chance to show up before counting.
      await delay(300);
      assert.equal(pebble!.orderCount() - ordersBefore, 1, 'one order: the renewal itself; the others adopted it');
      for (const node of nodes.slice(1)) {
        assert.ok(!node.messages.some((m) => m.type === 'issuing' && m.name === name && m.receivedAt >= asked), `${node.id} placed no order`);
      }
      console.log(`# ${kind}: renewal by n0 served by n1, n2 after ${seenAfter.join(', ')} ms`);
    }));

    it('a failed validation is not repeated by the other processes: one order, one backoff for the cluster', () => withNodeLogs(() => nodes, async () => {
      const name = `broken${suffix}`;
      proxy.broken.add(name);
      try {
        const ordersBefore = pebble!.orderCount();
        const asked = Date.now();
        // Three handshakes' worth of getCertificate per process, all at once.
        const results = await Promise.all(
          nodes.flatMap((node) =>
            Array.from({ length: 3 }, () =>
              node.request({ op: 'get', name }).then(
                () => ({ node: node.id, ok: true as const }),
                (error: NodeRequestError) => ({ node: node.id, ok: false as const, type: error.name, code: error.code, problemType: error.lastErrorProblemType }),
              ),
            ),
          ),
        );
        for (const r of results) {
          assert.ok(!r.ok && r.type === 'CertificateUnavailableError', `${r.node}: refused with a typed error: ${JSON.stringify(r)}`);
          assert.equal(r.ok === false && r.code, 'ERR_CERTIFICATE_UNAVAILABLE');
          assert.equal(r.ok === false && r.problemType, 'urn:ietf:params:acme:error:unauthorized', 'carrying the CA\'s problem type');
        }
        await delay(500);
        const orders = pebble!.orderCount() - ordersBefore;
        const attempts = nodes.map((n) => n.messages.filter((m) => m.type === 'issuing' && m.name === name && m.receivedAt >= asked).length);
        assert.equal(orders, 1, `one failed order for the whole cluster, not one per process (orders per process: ${attempts.join(', ')})`);
        // Every process now waits out the same backoff (about 1 min), whatever the handshakes.
        for (const node of nodes) {
          const status = (await node.request<NameStatus[]>({ op: 'status' })).find((s) => s.name === name);
          assert.equal(status?.state, 'failed-backoff', `${node.id} is in backoff`);
          assert.ok((status?.nextAttemptAt ?? 0) > Date.now() + 30_000, `${node.id}: next attempt not before the shared backoff`);
        }
      } finally {
        proxy.broken.delete(name);
      }
    }));
  });
}

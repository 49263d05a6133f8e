/**
 * Real faults against a cluster on one directory (file storage): two engine
 * processes, one Pebble, a short lease (1.5 s). A holder frozen (SIGSTOP) past
 * its lease, and a holder frozen between its fence check and its publish (it
 * stops itself inside the fenced commit, then is woken after the new holder
 * stored): no older certificate is ever stored, the new holder places one
 * order, and every process serves the stored certificate within a bound.
 */
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  dropStorage,
  isIssued,
  isIssuing,
  nodeConfigFor,
  runId,
  startClusterCa,
  startNode,
  stopNodes,
  storedFingerprint,
  verifiedHandshake,
  withNodeLogs,
  type ClusterNode,
  type NodeMessage,
  type NodeStorageConfig,
} from './helpers/cluster-node.js';
import { assertConverged, assertNoFailure, watchStored } from './helpers/cluster-checks.js';

// Longer than the other cluster tests' 1.5 s: a file lease is renewed with fsyncs, slow on a loaded disk.
const LEASE_MS = 4000;
const SLOW_MS = 30_000; // always ended by the test (`release`)

const { proxy, pebble, pebbleSkip, rootPem } = await startClusterCa();
after(() => proxy.setBackends([]));

async function fileCluster(suffix: string): Promise<{ storage: NodeStorageConfig; nodes: [ClusterNode, ClusterNode] }> {
  const storage: NodeStorageConfig = { kind: 'file', dir: await mkdtemp(path.join(os.tmpdir(), 'certstate-file-cluster-')) };
  const nodes = await Promise.all(['n0', 'n1'].map((id) => startNode(nodeConfigFor(pebble!, id, storage, suffix, LEASE_MS))));
  proxy.setBackends(nodes.map((n) => n.httpPort));
  return { storage, nodes: nodes as [ClusterNode, ClusterNode] };
}

describe('file storage, two engine processes: a holder frozen in its issuance', { skip: pebbleSkip }, () => {
  it('SIGSTOP past its lease, then SIGCONT: it stores nothing older, adopts the new holder\'s certificate; one order by the new holder', async () => {
    const run = runId();
    const suffix = `.${run}.fstop.example.com`;
    const { storage, nodes } = await fileCluster(suffix);
    const [n0, n1] = nodes;
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `stop${suffix}`;
        await n0.request({ op: 'slow', ms: SLOW_MS });
        const first = verifiedHandshake(n0.httpsPort, name, rootPem);
        await n0.waitFor(isIssued(name));
        n0.signal('SIGSTOP');
        proxy.setBackends([n1.httpPort]); // the load balancer drops the frozen process
        try {
          const orders = pebble!.orderCount();
          const second = await verifiedHandshake(n1.httpsPort, name, rootPem);
          assert.ok(second.ok, JSON.stringify(second));
          const newer = await storedFingerprint(storage, name);
          assert.equal(newer, second.fingerprint);
          const history = watchStored(storage, name);
          await delay(LEASE_MS);
          n0.signal('SIGCONT');
          await n0.request<number>({ op: 'release' }); // (it may have aborted already: its lease is gone)
          const r = await first;
          assert.ok(r.ok && r.fingerprint === newer, `n0's handshake got the stored certificate: ${JSON.stringify(r)}`);
          assert.equal(await assertConverged(nodes, storage, name), newer);
          assert.deepEqual(await history.done(), [newer], 'the frozen holder stored nothing');
          assert.equal(pebble!.orderCount() - orders, 1, 'one order by the new holder');
          assertNoFailure(n0, name);
        } finally {
          n0.signal('SIGCONT');
        }
      });
    } finally {
      await stopNodes(nodes);
      await dropStorage(storage);
    }
  });

  it('frozen between its fence check and its publish (a delayed commit), woken after the new holder stored: its version lands below, never above', async () => {
    const run = runId();
    const suffix = `.${run}.fcommit.example.com`;
    const { storage, nodes } = await fileCluster(suffix);
    const [n0, n1] = nodes;
    try {
      await withNodeLogs(() => nodes, async () => {
        const name = `commit${suffix}`;
        const key = `certificates/${name}.json`;
        await n0.request({ op: 'freezeAtCommit', key });
        const before = pebble!.orderCount();
        const first = verifiedHandshake(n0.httpsPort, name, rootPem);
        const issued = await n0.waitFor(isIssued(name));
        await n0.waitFor((m: NodeMessage) => m.type === 'committing' && m.key === key); // n0 has stopped itself inside its commit
        proxy.setBackends([n1.httpPort]);
        try {
          const second = await verifiedHandshake(n1.httpsPort, name, rootPem);
          assert.ok(second.ok, JSON.stringify(second));
          assert.notEqual(second.fingerprint, issued.fingerprint, 'n1 ordered its own certificate');
          assert.equal(await storedFingerprint(storage, name), second.fingerprint);
          const history = watchStored(storage, name);
          n0.signal('SIGCONT'); // its rename lands now, under a newer version
          const r = await first;
          assert.ok(r.ok && r.fingerprint === second.fingerprint, `n0's handshake got the stored certificate: ${JSON.stringify(r)}`);
          assert.equal(await assertConverged(nodes, storage, name), second.fingerprint, 'the late commit did not replace the newer certificate');
          await delay(500);
          assert.deepEqual(await history.done(), [second.fingerprint], 'storage never showed the older certificate');
          assert.equal(pebble!.orderCount() - before, 2, "two orders: the frozen holder's and the new holder's");
          assert.ok(n1.messages.filter(isIssuing(name)).length === 1, 'n1 ordered once');
          assertNoFailure(n0, name);
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

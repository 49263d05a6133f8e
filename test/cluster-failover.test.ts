/**
 * Real clusters under failure: three engine processes on one Redis, then on
 * one PostgreSQL, with one Pebble, and a lock holder that dies or stalls in
 * the middle of an issuance.
 *
 * Issuance is made slow on purpose: each child's issuer sleeps *after* Pebble
 * issued and *before* returning, i.e. while it holds the issuance lock and has
 * stored nothing. The lease (`lockTtlMs`) is short: 1.5 s.
 *
 * - SIGKILL of the holder in that window: another process takes the lock once
 *   the lease expires and completes the issuance; two orders in all (the dead
 *   one's and the takeover), the third process adopts; nothing hangs.
 * - SIGSTOP of the holder past its lease, then SIGCONT: its write is refused by
 *   fencing, it adopts the stored certificate, and all three serve the one in
 *   storage.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  backendSkip,
  dropStorage,
  firstToReport,
  isIssued,
  isIssuing,
  isStore,
  nodeConfigFor,
  runId,
  startNode,
  startClusterCa,
  stopNodes,
  storageFor,
  storedFingerprint,
  verifiedHandshake,
  withNodeLogs,
  type ClusterNode,
  type HandshakeResult,
  type NodeConfig,
  type NodeStorageConfig,
} from './helpers/cluster-node.js';

const LEASE_MS = 1500;
// Long: the sleep is always ended by the test (SIGKILL, or `release` after SIGCONT), never by itself.
const SLOW_MS = 30_000;

const { proxy, pebble, pebbleSkip, rootPem } = await startClusterCa();

type Tagged = HandshakeResult & { node: string };

/** `count` verified handshakes for `name` to each node, all at once. */
function handshakes(nodes: ClusterNode[], name: string, count: number): Promise<Tagged>[] {
  return nodes.flatMap((node) => Array.from({ length: count }, () => verifiedHandshake(node.httpsPort, name, rootPem, 30_000).then((r) => ({ ...r, node: node.id }))));
}

for (const kind of ['redis', 'postgres'] as const) {
  const skip = pebbleSkip || (await backendSkip(kind));

  describe(`a lock holder that dies or stalls mid-issuance, three processes on ${kind}`, { skip }, () => {
    const run = runId();
    const storage: NodeStorageConfig = storageFor(kind, run);
    const suffix = `.${run}.${kind}.example.com`;
    let nodes: ClusterNode[] = [];
    const everyNode: ClusterNode[] = [];
    let serial = 0;

    const config = (): NodeConfig => nodeConfigFor(pebble!, `n${serial++}`, storage, suffix, LEASE_MS);
    const spawn = async () => {
      const node = await startNode(config());
      everyNode.push(node);
      return node;
    };

    before(async () => {
      nodes = await Promise.all([spawn(), spawn(), spawn()]);
      proxy.setBackends(nodes.map((n) => n.httpPort));
    });

    after(async () => {
      proxy.setBackends([]);
      await stopNodes(everyNode);
      await dropStorage(storage);
    });

    it('SIGKILL of the holder mid-issuance: another process takes over after the lease and completes; two orders in all; nothing hangs', () =>
      withNodeLogs(() => everyNode, async () => {
        const name = `killed${suffix}`;
        const started = Date.now();
        const ordersBefore = pebble!.orderCount();
        await Promise.all(nodes.map((n) => n.request({ op: 'slow', ms: SLOW_MS })));
        const pending = handshakes(nodes, name, 5);

        const { node: holder, message: issued } = await firstToReport(nodes, isIssued(name));
        const survivors = nodes.filter((n) => n !== holder);
        // The takeover issues at full speed.
        await Promise.all(survivors.map((n) => n.request({ op: 'slow', ms: 0 })));
        holder.signal('SIGKILL');
        const killedAt = Date.now();
        // The load balancer notices (the proxy also skips a backend it cannot reach).
        proxy.setBackends(survivors.map((n) => n.httpPort));

        const results = await Promise.all(pending);
        const took = Date.now() - started;
        const { node: successor, message: takeover } = await firstToReport(survivors, isIssuing(name), 1000);
        const stored = await storedFingerprint(storage, name);

        // Survivors' handshakes all got the takeover's certificate; the dead process's clients saw their connection drop.
        const onSurvivors = results.filter((r) => r.node !== holder.id);
        assert.equal(onSurvivors.length, 10);
        for (const r of onSurvivors) assert.ok(r.ok && r.fingerprint === stored, `${r.node}: ${JSON.stringify(r)}`);
        assert.ok(results.filter((r) => r.node === holder.id).every((r) => !r.ok), 'the killed process answered nothing');
        assert.notEqual(stored, issued.fingerprint, 'the killed holder\'s certificate was never stored');
        const takeoverIssued = await successor.waitFor(isIssued(name), 1000);
        assert.equal(stored, takeoverIssued.fingerprint, 'the stored certificate is the takeover\'s');

        // Taken over once the lease ran out, not before, and not much later.
        const takeoverAfter = takeover.receivedAt - killedAt;
        const leaseLeft = issued.receivedAt + LEASE_MS - killedAt;
        assert.ok(takeover.receivedAt > killedAt, 'no one issued while the holder lived');
        assert.ok(takeoverAfter <= LEASE_MS + 1000, `takeover ${takeoverAfter} ms after the kill (lease ${LEASE_MS} ms)`);

        // Orders: the dead holder's and the takeover; the third process adopted.
        assert.equal(pebble!.orderCount() - ordersBefore, 2, 'two orders: the killed holder\'s and the takeover');
        const third = survivors.find((n) => n !== successor)!;
        assert.ok(!third.messages.some(isIssuing(name)), `${third.id} placed no order`);
        assert.ok(took < 15_000, `all handshakes answered within ${took} ms`);
        console.log(
          `# ${kind}: SIGKILL ${holder.id} (lease had ≤ ${Math.max(0, leaseLeft)} ms left); ${successor.id} took over ${takeoverAfter} ms after the kill; ` +
            `all ${onSurvivors.length} surviving handshakes answered in ${took} ms; 2 orders`,
        );

        // A replacement process (as a supervisor would restart it) serves the stored certificate at once, with no order.
        nodes = [...survivors, await spawn()];
        proxy.setBackends(nodes.map((n) => n.httpPort));
        const fresh = await verifiedHandshake(nodes[2]!.httpsPort, name, rootPem);
        assert.ok(fresh.ok && fresh.fingerprint === stored, 'the restarted process serves the stored certificate');
        assert.equal(pebble!.orderCount() - ordersBefore, 2);
      }));

    it('SIGSTOP of the holder past its lease, then SIGCONT: it writes nothing (it sees its lease gone, or fencing refuses the write) and adopts the stored certificate', () =>
      withNodeLogs(() => everyNode, async () => {
        const name = `paused${suffix}`;
        const ordersBefore = pebble!.orderCount();
        await Promise.all(nodes.map((n) => n.request({ op: 'slow', ms: SLOW_MS })));
        const pending = handshakes(nodes, name, 5);

        const { node: holder, message: issued } = await firstToReport(nodes, isIssued(name));
        holder.signal('SIGSTOP');
        const stoppedAt = Date.now();
        // (The proxy in front of the HTTP servers skips the stalled process after 1 s, as a load balancer would.)
        let resumedAt = 0;
        try {
          const others = nodes.filter((n) => n !== holder);
          await Promise.all(others.map((n) => n.request({ op: 'slow', ms: 0 })));

          // Another process takes over once the lease expires and stores its certificate.
          const { node: successor, message: storedMessage } = await firstToReport(others, isStore(name, 'ok'), 15_000);
          const newer = await storedFingerprint(storage, name);
          assert.ok(newer && newer !== issued.fingerprint, 'a newer certificate is stored');
          // The holder renews its lease every third of it, so at 'issued' at least two thirds were left.
          const earliestExpiry = issued.receivedAt + (LEASE_MS * 2) / 3;
          assert.ok(storedMessage.receivedAt >= earliestExpiry - 50, `not before the paused holder's lease ran out (${storedMessage.receivedAt - issued.receivedAt} ms after it issued)`);
          // Keep the holder paused well past its lease, then wake it.
          const pausedFor = Math.max(0, LEASE_MS * 2 - (Date.now() - stoppedAt));
          await new Promise((r) => setTimeout(r, pausedFor));
          holder.signal('SIGCONT');
          resumedAt = Date.now();
          // On waking it finds its lease gone (it had run for twice its length) and aborts its issuance
          // before writing; were it past that check, fencing would refuse the write. Either way: no write.
          await holder.request<number>({ op: 'release' });

          // It adopts the stored certificate instead; no write of its own reaches storage.
          const adopted = await holder.waitFor((m) => m.type === 'engine' && m.name === name && (m.event === 'cert_obtained' || m.event === 'cert_renewed'), 10_000);
          assert.equal(adopted.type === 'engine' && adopted.adopted, true, 'cert_obtained with adopted: true');
          assert.equal(adopted.type === 'engine' && adopted.fingerprint, newer, 'it adopted the stored certificate');
          assert.equal(await storedFingerprint(storage, name), newer, 'the paused holder overwrote nothing');
          assert.ok(!holder.messages.some(isStore(name, 'ok')), 'the paused holder stored nothing');

          // Every handshake (those held by the paused process too) got the stored certificate.
          const results = await Promise.all(pending);
          for (const r of results) assert.ok(r.ok && r.fingerprint === newer, `${r.node}: ${JSON.stringify(r)}`);
          // All three serve the stored one now.
          for (const node of nodes) {
            const r = await verifiedHandshake(node.httpsPort, name, rootPem);
            assert.ok(r.ok && r.fingerprint === newer, `${node.id} serves the stored certificate`);
          }
          assert.equal(pebble!.orderCount() - ordersBefore, 2, 'two orders: the paused holder\'s (never stored) and the takeover');
          console.log(
            `# ${kind}: SIGSTOP ${holder.id} for ${resumedAt - stoppedAt} ms; ${successor.id} stored after ${storedMessage.receivedAt - stoppedAt} ms; ` +
              `on SIGCONT it wrote nothing and adopted the stored certificate ${adopted.receivedAt - resumedAt} ms later`,
          );
        } finally {
          if (!resumedAt) holder.signal('SIGCONT');
        }
      }));
  });
}

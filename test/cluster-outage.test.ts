/**
 * Real clusters when the shared storage goes away: three engine processes on
 * one Redis, then on one PostgreSQL, each reaching it through a TCP proxy the
 * test can sever, as a crashed or restarting server (or a network partition)
 * would. One Pebble.
 *
 * While the storage is down for a few seconds:
 * - handshakes for names whose certificates are in memory keep succeeding, at
 *   full speed (no handshake waits on the storage);
 * - what does need the storage (a new on-demand name, a forced renewal) fails
 *   fast with a typed error instead of hanging;
 * - the logs stay quiet: a bounded number of typed error lines per process,
 *   however many handshakes come.
 * When it is back:
 * - every process reconnects by itself: a renewal by one process is served by
 *   the others again (change notifications resumed), and new names are issued,
 *   one order each.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import {
  backendSkip,
  dropStorage,
  eventually,
  runId,
  startNodes,
  startClusterCa,
  startSeverableProxy,
  stopNodes,
  storageFor,
  storageServer,
  verifiedHandshake,
  withNodeLogs,
  type ClusterNode,
  type HandshakeResult,
  type HandshakeSummary,
  type LogLine,
  type NodeRequestError,
  type NodeStorageConfig,
  type ServedInfo,
  type SeverableProxy,
} from './helpers/cluster-node.js';

const OUTAGE_MS = 5000;
const OPERATION_TIMEOUT_MS = 2000;

const { proxy, pebble, pebbleSkip, rootPem } = await startClusterCa();

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;

/** Handshakes in a loop (a few at a time) until stopped; bounded in count. */
function handshakeLoad(nodes: ClusterNode[], names: string[], concurrency = 4, maxCount = 20_000) {
  const results: (HandshakeResult & { at: number; node: string; name: string })[] = [];
  let stopped = false;
  let i = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped && i < maxCount) {
      const n = i++;
      const node = nodes[n % nodes.length]!;
      const name = names[Math.floor(n / nodes.length) % names.length]!; // every node sees every name
      const at = Date.now();
      results.push({ ...(await verifiedHandshake(node.httpsPort, name, rootPem, 10_000)), at, node: node.id, name });
    }
  });
  return {
    results,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** Log lines that carry an error (pino `err`, or the state log's `error`). */
function errorLines(logs: LogLine[], from: number, to: number): LogLine[] {
  return logs.filter((l) => (l.time ?? 0) >= from && (l.time ?? 0) <= to && (l.err !== undefined || l.error !== undefined) && l.msg !== 'handshake refused');
}
const errorType = (l: LogLine) => ((l.err ?? l.error) as { type?: string } | undefined)?.type;

for (const kind of ['redis', 'postgres'] as const) {
  const skip = pebbleSkip || (await backendSkip(kind));

  describe(`storage outage under three processes on ${kind}`, { skip }, () => {
    const run = runId();
    const suffix = `.${run}.${kind}.example.com`;
    let cut: SeverableProxy;
    let storage: NodeStorageConfig;
    let nodes: ClusterNode[] = [];

    before(async () => {
      const server = storageServer(kind);
      cut = await startSeverableProxy(server.port, server.host);
      storage = storageFor(kind, run, cut.port);
      nodes = await startNodes(3, {
        storage,
        directoryUrl: pebble!.directoryUrl,
        caBundlePem: pebble!.caBundlePem,
        allowSuffix: suffix,
        lockTtlMs: 10_000,
        handshakeTimeout: 20_000,
        operationTimeoutMs: OPERATION_TIMEOUT_MS,
      });
      proxy.setBackends(nodes.map((n) => n.httpPort));
    });

    after(async () => {
      proxy.setBackends([]);
      cut?.restore();
      await stopNodes(nodes);
      await cut?.close();
      if (storage) await dropStorage(storageFor(kind, run));
    });

    it(`storage cut for ${OUTAGE_MS / 1000} s: valid names keep being served, storage work fails fast and typed, logs stay bounded, everything resumes after`, () =>
      withNodeLogs(() => nodes, async () => {
        // Three names, served by all three processes.
        const names = ['a', 'b', 'c'].map((x) => `${x}${suffix}`);
        for (const name of names) {
          const first = await verifiedHandshake(nodes[0]!.httpsPort, name, rootPem);
          assert.ok(first.ok, `${name} obtained: ${JSON.stringify(first)}`);
          for (const node of nodes.slice(1)) assert.ok((await verifiedHandshake(node.httpsPort, name, rootPem)).ok);
        }

        const load = handshakeLoad(nodes, names);
        await delay(500);
        cut.sever({ down: true });
        const downAt = Date.now();
        const ordersAtCut = pebble!.orderCount();

        // Storage work fails fast, typed: a new on-demand name …
        const newName = `during${suffix}`;
        const t0 = Date.now();
        const refused = await nodes[0]!.request({ op: 'get', name: newName }).then(
          () => undefined,
          (error: NodeRequestError) => error,
        );
        const refusedAfter = Date.now() - t0;
        assert.ok(refused, 'a new name cannot be obtained without storage');
        assert.equal(refused.name, 'CertificateUnavailableError');
        assert.match(refused.lastErrorCode ?? '', /^ERR_STORAGE/, `the storage's code: ${refused.lastErrorCode}: ${refused.message}`);
        assert.ok(refusedAfter <= 2 * OPERATION_TIMEOUT_MS + 1000, `refused within ${refusedAfter} ms, not hung`);
        // … and a TLS handshake for it is refused, not held.
        const tlsRefused = await verifiedHandshake(nodes[1]!.httpsPort, `during2${suffix}`, rootPem, 15_000);
        assert.ok(!tlsRefused.ok && tlsRefused.ms <= 2 * OPERATION_TIMEOUT_MS + 1000, `TLS refused in ${tlsRefused.ms.toFixed(0)} ms`);
        // … and an operator's forced renewal: rejected typed, while the current certificate is still served.
        const forced = await nodes[2]!.request({ op: 'forceRenew', name: names[2]! }).then(
          () => undefined,
          (error: NodeRequestError) => error,
        );
        assert.equal(forced?.name, 'CertificateUnavailableError', `forceRenew refused: ${forced?.message}`);
        assert.match(forced?.lastErrorCode ?? '', /^ERR_STORAGE/);
        const stillServed = await verifiedHandshake(nodes[2]!.httpsPort, names[2]!, rootPem);
        assert.ok(stillServed.ok, 'the current certificate is still served after the failed forced renewal');

        await delay(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
        cut.restore();
        const upAt = Date.now();
        await delay(300);
        await load.stop();

        // Every handshake for a name with a certificate in memory succeeded …
        const during = load.results.filter((r) => r.at >= downAt && r.at < upAt);
        const failed = load.results.filter((r) => !r.ok);
        assert.ok(during.length >= 50, `enough handshakes during the outage (${during.length})`);
        assert.deepEqual(failed, [], 'no handshake for a valid name failed');
        // … and, by the engine's own account, the names in `valid` were served at once from
        // memory. (Client-side latency also measures this machine's load: reported, not asserted.)
        // The name whose forced renewal failed is in `failed-backoff` with its certificate:
        // answered by the statechart in the same tick, never refused.
        const p99 = percentile(during.map((r) => r.ms), 0.99);
        const window = { op: 'handshakes' as const, since: downAt, until: upAt };
        const served = await Promise.all(nodes.map((node) => node.request<HandshakeSummary>({ ...window, names: names.slice(0, 2) })));
        for (const [i, s] of served.entries()) {
          assert.ok(s.immediate > 0 && s.waited === 0 && s.failed === 0, `${nodes[i]!.id}: every handshake for a valid name served at once during the outage: ${JSON.stringify(s)}`);
        }
        const backedOff = await nodes[2]!.request<HandshakeSummary>({ ...window, names: [names[2]!] });
        assert.ok(backedOff.immediate + backedOff.waited > 0 && backedOff.failed === 0, `n2 served ${names[2]} throughout: ${JSON.stringify(backedOff)}`);

        // The logs: typed errors, and a bounded number of lines however many handshakes came.
        const perNode = nodes.map((node) => {
          const lines = errorLines(node.logs, downAt, upAt + 500);
          for (const line of lines) {
            const type = errorType(line);
            assert.ok(type && type !== 'Error' && type !== 'Object', `${node.id}: a typed error in ${JSON.stringify(line).slice(0, 300)}`);
          }
          return lines;
        });
        for (const [i, lines] of perNode.entries()) {
          assert.ok(lines.length <= 10, `${nodes[i]!.id}: ${lines.length} error lines during the outage:\n${lines.map((l) => JSON.stringify(l).slice(0, 200)).join('\n')}`);
        }

        // Back: every process reaches the storage again by itself …
        const reconnected = await Promise.all(
          nodes.map((node) => eventually(`${node.id} reaches the storage`, () => node.request({ op: 'probe' }).then(() => Date.now() - upAt), 15_000, 100)),
        );
        // … hears other processes' writes again: a renewal by n0 is served by n1 and n2 …
        const sinceOrders = Date.now();
        const renewed = await nodes[0]!.request<ServedInfo>({ op: 'forceRenew', name: names[0]! });
        const renewedAt = Date.now();
        const seen = await Promise.all(
          nodes.slice(1).map((node) =>
            eventually(
              `${node.id} serves the renewal made after the outage`,
              async () => {
                const r = await verifiedHandshake(node.httpsPort, names[0]!, rootPem);
                return r.ok && r.fingerprint === renewed.fingerprint ? Date.now() - renewedAt : undefined;
              },
              10_000,
              20,
            ),
          ),
        );
        // … and issues new names, once each.
        const after = await Promise.all(nodes.map((node) => verifiedHandshake(node.httpsPort, `after${suffix}`, rootPem)));
        assert.ok(after.every((r) => r.ok), `a new name after the outage: ${JSON.stringify(after)}`);
        assert.equal(new Set(after.map((r) => (r.ok ? r.fingerprint : ''))).size, 1);
        // Orders by name, from the issuer calls (each places one order; Pebble's log does not name them).
        const ordersFor = (name: string) => nodes.reduce((n, node) => n + node.messages.filter((m) => m.type === 'issuing' && m.name === name && m.receivedAt >= sinceOrders).length, 0);
        assert.equal(ordersFor(names[0]!), 1, 'one order for the renewal; the others adopted it');
        assert.equal(ordersFor(`after${suffix}`), 1, 'one order for the new name');
        // An issuer call is reported just before it places its order, and a name refused during the
        // outage may be retrying in the background right now: Pebble's log may trail the reports by
        // one order for a moment, but never leads them.
        const issuerCalls = () => nodes.reduce((n, node) => n + node.messages.filter((m) => m.type === 'issuing' && m.receivedAt >= downAt).length, 0);
        await eventually(
          'every order in Pebble\'s log since the cut is one of the issuer calls counted',
          () => {
            const calls = issuerCalls();
            const orders = pebble!.orderCount() - ordersAtCut;
            assert.ok(orders <= calls, `${orders} orders in Pebble's log since the cut, only ${calls} issuer calls`);
            return orders === calls ? true : undefined;
          },
          10_000,
          50,
        );

        console.log(
          `# ${kind}: ${during.length} handshakes during a ${upAt - downAt} ms outage, all ok (engine: ${served.map((x) => x.immediate).join('/')} served at once from memory; the backed-off name answered within ${backedOff.maxWaitedMs} ms), client p99 ${p99.toFixed(1)} ms; ` +
            `new name refused in ${refusedAfter} ms (${refused.code}); error log lines per process ${perNode.map((l) => l.length).join('/')}; ` +
            `storage reachable again after ${reconnected.join('/')} ms; renewal seen by the others after ${seen.join('/')} ms`,
        );
      }));

    it('a name first asked for during the outage is served by that same process soon after the storage is back', () =>
      withNodeLogs(() => nodes, async () => {
        // `during.<suffix>` was refused on n0 while the storage was down (the previous test).
        const r = await eventually(
          'n0 serves the name it could not look up during the outage',
          async () => {
            const result = await verifiedHandshake(nodes[0]!.httpsPort, `during${suffix}`, rootPem);
            return result.ok ? result : undefined;
          },
          15_000,
          500,
        );
        assert.ok(r.ok);
      }));
  });
}

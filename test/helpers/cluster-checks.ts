/**
 * What the cluster fault tests check after a fault, shared by every storage:
 * the stored certificate never goes back to one seen before, every process
 * serves the stored one within a bound, a process recorded no failure.
 */
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { eventually, storedFingerprint, type ClusterNode, type NodeStorageConfig, type ServedInfo } from './cluster-node.js';

/** The stored certificate of `name`, sampled every 50 ms: it must never go back to one seen before. `done()` returns the fingerprints seen, in order. */
export function watchStored(storage: NodeStorageConfig, name: string): { done(): Promise<string[]> } {
  const seen: string[] = [];
  let failure: string | undefined;
  let stop = false;
  const loop = (async () => {
    // At most a minute: a test that failed before calling done() must not keep the runner alive for ever.
    const until = Date.now() + 60_000;
    while (!stop && Date.now() < until) {
      const fingerprint = await storedFingerprint(storage, name).catch(() => undefined);
      if (fingerprint && seen.at(-1) !== fingerprint) {
        if (seen.includes(fingerprint)) failure = `storage went back to ${fingerprint} after ${seen.at(-1)}`;
        seen.push(fingerprint);
      }
      await delay(50);
    }
  })();
  return {
    async done() {
      stop = true;
      await loop;
      assert.equal(failure, undefined, failure);
      return seen;
    },
  };
}

/** Every process alive and serving the stored certificate of `name` within `boundMs`; returns its fingerprint. */
export async function assertConverged(nodes: ClusterNode[], storage: NodeStorageConfig, name: string, boundMs = 5_000): Promise<string> {
  const stored = await storedFingerprint(storage, name);
  assert.ok(stored, 'a certificate is stored');
  for (const node of nodes) {
    assert.ok(!node.exited(), `${node.id} is alive (no crash, no unhandled rejection)`);
    await eventually(`${node.id} serves the stored certificate`, async () => ((await node.request<ServedInfo>({ op: 'get', name })).fingerprint === stored ? true : undefined), boundMs);
  }
  return stored;
}

/** `node` emitted no `cert_failed` for `name`. */
export function assertNoFailure(node: ClusterNode, name: string): void {
  assert.ok(!node.messages.some((m) => m.type === 'engine' && m.event === 'cert_failed' && m.name === name), `${node.id} recorded no failure for ${name}`);
}

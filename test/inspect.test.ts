/**
 * The `inspect` option: a custom local observer sees a snapshot for every
 * transition of a name's actor (id `cert:<name>`), and nothing it is shown
 * (snapshots, events, their serialised form) holds PEM key material, while
 * the engine itself does hold keys for the very same certificates.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InspectionEvent } from 'xstate';
import { actorIdOf, createLocalInspector } from '../src/admin/inspector.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine, stateOf } from '../src/engine/engine.js';
import type { LifecycleState } from '../src/types.js';
import { perNameIssuer } from './helpers/browser.js';
import { installTestCa } from './helpers/scripted-issuer.js';

const NAME = 'inspected.example';
const PRIVATE_KEY_PEM = /-----BEGIN[^-]*PRIVATE KEY-----/;
const ANY_PEM = /-----BEGIN /;

/** Every string reachable from `value` through own properties (cycle-safe). */
function strings(value: unknown, out: string[] = [], seen = new WeakSet<object>()): string[] {
  if (typeof value === 'string') out.push(value);
  else if (value && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    for (const key of Reflect.ownKeys(value)) {
      try {
        strings((value as Record<string | symbol, unknown>)[key], out, seen);
      } catch {
        // getters that throw are not content
      }
    }
  }
  return out;
}

describe('inspector', () => {
  it('a custom observer receives a snapshot for every transition of a name, and none holds key material', async () => {
    const raw: InspectionEvent[] = [];
    const local = createLocalInspector({ filter: (e) => actorIdOf(e.actorRef) === `cert:${NAME}` });
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = perNameIssuer();
    // Every key the issuer hands the engine: the scan below must be able to find them.
    const issuedKeys: string[] = [];
    const issue = issuer.issue.bind(issuer);
    issuer.issue = async (request, context) => {
      const bundle = await issue(request, context);
      issuedKeys.push(bundle.privateKeyPem);
      return bundle;
    };
    const engine = createCertEngine({
      storage,
      issuers: [issuer],
      names: [NAME],
      timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 },
      inspect: (event) => {
        raw.push(event);
        local.inspect(event);
      },
    });
    const transitions: Array<{ from?: LifecycleState; to: LifecycleState }> = [];
    engine.on('state_changed', (e) => transitions.push({ from: e.from, to: e.to }));
    const fingerprints: string[] = [];
    engine.on('cert_obtained', (e) => fingerprints.push(e.certificate.fingerprint));
    engine.on('cert_renewed', (e) => fingerprints.push(e.certificate.fingerprint));

    await engine.start();
    await engine.forceRenew(NAME); // joins the start-up attempt: obtained
    await engine.forceRenew(NAME); // renewed
    issuer.outcomes.set(NAME, { kind: 'fail', message: 'CA down' });
    await engine.forceRenew(NAME).catch(() => undefined); // → failed-backoff
    issuer.outcomes.set(NAME, { kind: 'succeed' });
    await engine.forceRenew(NAME); // retry now → valid

    // The engine does hold private keys for these certificates: the scan below could find them.
    assert.equal(fingerprints.length, 3);
    assert.equal(issuedKeys.length, 3);
    for (const key of issuedKeys) assert.match(key, PRIVATE_KEY_PEM);
    assert.equal(engine._bundle(fingerprints.at(-1)!)?.privateKeyPem, issuedKeys.at(-1), 'the engine serves the last key');
    await engine.stop();

    // Snapshots of this name's actor, as lifecycle states, consecutive duplicates collapsed.
    const snapshots = raw.filter((e): e is Extract<InspectionEvent, { type: '@xstate.snapshot' }> => e.type === '@xstate.snapshot' && actorIdOf(e.actorRef) === `cert:${NAME}`);
    const seen = snapshots.map((e) => stateOf((e.snapshot as unknown as { value: unknown }).value)).filter((s, i, all) => i === 0 || s !== all[i - 1]);
    const expected = transitions.map((t) => t.to);
    // A name is `loading` from the moment it is known: its first event leaves it.
    assert.deepEqual(transitions[0], { from: 'loading', to: 'obtaining' });
    assert.deepEqual(expected, ['obtaining', 'valid', 'renewing', 'valid', 'renewing', 'failed-backoff', 'renewing', 'valid', 'stopped']);
    assert.deepEqual(seen, ['loading', ...expected], 'one snapshot (at least) per transition, in order');

    // Nothing shown to the inspector holds a PEM: not the raw snapshots/events, not their serialised form.
    for (const event of raw) {
      const shown = event.type === '@xstate.snapshot' ? [event.snapshot, event.event] : event.type === '@xstate.event' ? [event.event] : [];
      for (const text of strings(shown)) {
        assert.doesNotMatch(text, ANY_PEM, `inspection event ${event.type} of ${actorIdOf(event.actorRef)} must not hold PEM`);
        for (const key of issuedKeys) assert.ok(!text.includes(key.split('\n')[1]!), 'no fragment of an issued key');
      }
    }
    const serialised = JSON.stringify(local.records());
    assert.doesNotMatch(serialised, ANY_PEM);
    assert.ok(serialised.includes('"fingerprint"'), 'the serialised snapshots do carry certificate metadata');
    assert.ok(local.records().some((r) => r.type === '@xstate.snapshot' && (r.context as { lastError?: { message: string } }).lastError?.message === 'CA down'));
  });
});

/**
 * The `inspect` option: a custom local observer sees a snapshot for every
 * transition of a name's actor (id `cert:<name>`), and nothing it is shown
 * (snapshots, events, their serialised form) holds PEM key material, while
 * the engine itself does hold keys for the very same certificates. And
 * `@statelyai/inspect`'s WebSocket inspector, given as the option, delivers
 * the machine definition and those snapshots to a local WebSocket receiver.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { createWebSocketInspector } from '@statelyai/inspect';
import { WebSocketServer } from 'ws';
import type { InspectionEvent } from 'xstate';
import { actorIdOf, createLocalInspector } from '../src/admin/inspector.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine, stateOf } from '../src/engine/engine.js';
import { certificateMachine } from '../src/machines/certificate.js';
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

  it("@statelyai/inspect's WebSocket inspector, as the inspect option, delivers the machine definition and every snapshot of cert:<name> to a local receiver", async () => {
    const receiver = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(receiver, 'listening');
    const messages: Array<Record<string, unknown>> = [];
    const raw: string[] = [];
    receiver.on('connection', (socket) =>
      socket.on('message', (data) => {
        raw.push(String(data));
        messages.push(JSON.parse(String(data)) as Record<string, unknown>);
      }),
    );
    const connected = once(receiver, 'connection');
    const inspector = createWebSocketInspector({ url: `ws://127.0.0.1:${(receiver.address() as AddressInfo).port}` });
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = perNameIssuer();
    const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME], timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 }, inspect: inspector.inspect });
    const transitions: LifecycleState[] = [];
    engine.on('state_changed', (e) => transitions.push(e.to));
    try {
      await connected; // events before the connection would only be queued (at most 200)
      await engine.start();
      await engine.forceRenew(NAME);
      await engine.forceRenew(NAME); // renewed
      issuer.outcomes.set(NAME, { kind: 'fail', message: 'CA down' });
      await engine.forceRenew(NAME).catch(() => undefined); // → failed-backoff
      await engine.stop();

      // The inspector sends from a timer: wait for the actor's final snapshot to arrive.
      const actor = () => messages.find((m) => m.type === '@xstate.actor' && m.name === `cert:${NAME}`);
      const seen = () => {
        const sessionId = actor()?.sessionId;
        return messages
          .filter((m) => m.type === '@xstate.snapshot' && m.sessionId === sessionId)
          .map((m) => stateOf((m.snapshot as { value: unknown }).value))
          .filter((s, i, all) => i === 0 || s !== all[i - 1]);
      };
      const deadline = Date.now() + 10_000;
      while (seen().at(-1) !== 'stopped') {
        if (Date.now() > deadline) assert.fail(`no final snapshot; got ${JSON.stringify(seen())} from ${messages.length} messages`);
        await new Promise((r) => setTimeout(r, 20));
      }

      // The machine definition arrives with the actor: the real chart, by id and states.
      const definition = JSON.parse(actor()!.definition as string) as { id: string; states: Record<string, unknown> };
      assert.equal(definition.id, certificateMachine.id);
      assert.deepEqual(Object.keys(definition.states).sort(), Object.keys(certificateMachine.config.states!).sort());
      // A snapshot (at least) per transition, in order, and none holds key material.
      // (state_changed starts from `loading`, the state every name is born in; the inspector shows that first snapshot too.)
      assert.deepEqual(transitions, ['obtaining', 'valid', 'renewing', 'valid', 'renewing', 'failed-backoff', 'stopped']);
      assert.deepEqual(seen(), ['loading', ...transitions]);
      for (const text of raw) assert.doesNotMatch(text, ANY_PEM);
    } finally {
      inspector.stop();
      for (const client of receiver.clients) client.terminate();
      await new Promise((r) => receiver.close(r));
    }
  });
});

/**
 * Model-based tests: paths generated from the real lifecycle machine with
 * `xstate/graph` (shortest and simple paths), each replayed on the real
 * engine — scripted issuer, memory storage, simulated clock — asserting at
 * every step that the engine is in the path's state and that a handshake gets
 * what DESIGN.md §2 promises in that state (at once, or the outcome of the
 * attempt in flight).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, stateOf, type CertEngine, type ServedCertificate } from '../src/engine/engine.js';
import { serializeFailureRecord } from '../src/engine/stored.js';
import { StorageError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { LifecycleState, Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, testLeafKey, type ScriptedIssuer } from './helpers/scripted-issuer.js';
import { seedCertificate } from './helpers/tls.js';
import { interceptStorage } from './helpers/storage-wrap.js';
import { modelPaths, replayEvents, NAME, DAY, T0, type CertKind, type LoadVariant, type ModelEvent } from './helpers/model-paths.js';

// ─── Replay on the real engine ─────────────────────────────────────────────

/**
 * A storage whose loads wait for the test's go (so `loading` can be probed and
 * storage seeded first), or fail while the test says so; `rearm` makes the
 * next loads wait again (a load retried after a failure).
 */
function gatedStorage(inner: Storage) {
  let mode: 'wait' | 'fail' | 'pass' = 'wait';
  const waiting: Array<() => void> = [];
  const release = (fail: boolean) => {
    mode = fail ? 'fail' : 'pass';
    for (const wake of waiting.splice(0)) wake();
  };
  const rearm = () => {
    mode = 'wait';
  };
  const storage = interceptStorage(inner, {
    description: 'gated',
    load: async (key, next) => {
      while (mode === 'wait') await new Promise<void>((resolve) => waiting.push(resolve));
      if (mode === 'fail') throw new StorageError('storage down');
      return next(key);
    },
  });
  return { storage, release, rearm };
}

interface Probe {
  promise: Promise<{ ok: true; served: ServedCertificate } | { ok: false; error: Error }>;
  settled: boolean;
  state: LifecycleState;
}

function probe(engine: CertEngine, state: LifecycleState): Probe {
  const p: Probe = { state, settled: false, promise: undefined as never };
  p.promise = engine.getCertificate(NAME).then(
    (served) => ((p.settled = true), { ok: true as const, served }),
    (error: Error) => ((p.settled = true), { ok: false as const, error }),
  );
  return p;
}

const tick = () => new Promise<void>((r) => setImmediate(r));
async function flush(n = 5) {
  for (let i = 0; i < n; i++) await tick();
}

async function untilState(engine: CertEngine, seen: () => LifecycleState | undefined, expected: LifecycleState) {
  for (let i = 0; i < 2000 && seen() !== expected; i++) await (i < 50 ? tick() : new Promise((r) => setTimeout(r, 1)));
  assert.equal(seen(), expected);
}

async function seed(storage: Storage, clock: ManualClock, kind: CertKind) {
  const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
  const notBefore = { valid: clock.now(), due: clock.now() - 70 * DAY, expired: clock.now() - 100 * DAY }[kind];
  const bundle = await ca.issue({ names: [NAME] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => notBefore + 60_000 });
  await seedCertificate(storage, NAME, bundle);
}

/** Replay one path; returns the number of handshake contracts checked. */
async function replay(steps: Array<{ event: ModelEvent; state: { value: unknown } }>): Promise<number> {
  const clock = new ManualClock(T0);
  const inner = memoryStorage();
  await installTestCa(inner);
  const { storage, release, rearm } = gatedStorage(inner);
  const issuer: ScriptedIssuer = scriptedIssuer({ validityMs: 90 * DAY });
  const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME], clock, random: () => 0.5, handshakeTimeout: 30_000 });
  let current: LifecycleState | undefined = 'loading'; // a name is loading before its first event
  const trace: string[] = [];
  engine.on('state_changed', (e) => {
    current = e.to;
    trace.push(`  ${e.from}→${e.to}`);
  });
  engine.on('cert_obtaining', (e) => trace.push(`  attempt ${e.attempt} (${e.reason})`));
  const started = engine.start();
  const held: Probe[] = [];
  let checks = 0;
  let lastFailure = '';

  const checkContract = async (state: LifecycleState) => {
    if (state === 'stopped') return;
    const p = probe(engine, state);
    await flush();
    const status = engine.status()[0]!;
    switch (state) {
      case 'valid':
      case 'renewing': {
        assert.ok(p.settled, `${state}: a handshake is answered at once`);
        const r = await p.promise;
        assert.ok(r.ok, `${state}: gets the certificate`);
        assert.equal(r.served.meta.fingerprint, status.certificate!.fingerprint);
        break;
      }
      case 'storage-unreadable': {
        assert.ok(p.settled, 'storage-unreadable: answered at once');
        const r = await p.promise;
        assert.ok(!r.ok && r.error.name === 'CertificateUnavailableError' && r.error.message.includes('storage down'), 'storage-unreadable: the storage error');
        break;
      }
      case 'failed-backoff': {
        assert.ok(p.settled, 'failed-backoff: answered at once');
        const r = await p.promise;
        const usable = status.certificate && status.certificate.notAfter > clock.now();
        if (usable) {
          assert.ok(r.ok, 'failed-backoff with a valid certificate serves it');
        } else {
          assert.ok(!r.ok && r.error.name === 'CertificateUnavailableError', 'failed-backoff without a certificate: the recorded error');
          assert.ok(r.error.message.includes(status.lastError!.message), 'it is the recorded error');
        }
        break;
      }
      default:
        assert.ok(!p.settled, `${state}: a handshake waits for the attempt in flight`);
        held.push(p);
    }
    checks++;
  };

  const settleHeld = async (outcome: 'success' | 'failure' | 'stopped') => {
    await flush();
    for (const p of held.splice(0)) {
      const r = await p.promise;
      if (outcome === 'success') {
        assert.ok(r.ok, `a handshake held in ${p.state} gets the certificate of the attempt that ended`);
        assert.equal(r.served.meta.fingerprint, engine.status()[0]!.certificate!.fingerprint);
      } else if (outcome === 'failure') {
        assert.ok(!r.ok && r.error.name === 'CertificateUnavailableError', `a handshake held in ${p.state} gets that attempt's error`);
        assert.ok(r.error.message.includes(lastFailure), `…the error of that attempt (${lastFailure}): ${r.error.message}`);
      } else {
        assert.ok(!r.ok && r.error.name === 'EngineStoppedError', `a handshake held in ${p.state} is released by stop`);
      }
    }
  };

  try {
    for (const [i, step] of steps.entries()) {
      const expected = stateOf(step.state.value);
      trace.push(`step ${i}: ${step.event.type} (expect ${expected})`);
      const event = step.event;
      const status = () => engine.status()[0];
      switch (event.type) {
        case 'xstate.init':
          break;
        case "xstate.done.actor.load": {
          const v = (event as unknown as { variant: LoadVariant }).variant;
          if (v.certificate) await seed(inner, clock, v.certificate);
          if (v.backoff) {
            const record = { attempts: 1, nextAttemptAt: clock.now() + 600_000, lastError: { type: 'IssuanceError', message: 'stored failure', at: clock.now() - 1 } };
            await inner.store(keys.failure(NAME), serializeFailureRecord(record));
            lastFailure = 'stored failure';
          }
          release(false);
          await started;
          if (expected === 'failed-backoff') await settleHeld('failure');
          if (expected === 'valid' || expected === 'renewing') await settleHeld('success');
          break;
        }
        case 'xstate.error.actor.load':
          release(true);
          await started;
          lastFailure = 'storage down';
          await settleHeld('failure');
          rearm(); // the retry after the backoff loads again, when the path says so
          break;
        case 'xstate.after.untilNextAttempt.certificate.storage-unreadable':
          release(false);
          clock.advanceTo(status()!.nextAttemptAt!);
          break;
        case 'xstate.done.actor.attempt':
          await issuer.untilPending();
          await issuer.succeed();
          await untilState(engine, () => current, expected);
          await settleHeld('success');
          break;
        case 'xstate.error.actor.attempt':
          await issuer.untilPending();
          lastFailure = `scripted failure #${issuer.calls}`;
          issuer.fail(lastFailure);
          await untilState(engine, () => current, expected);
          await settleHeld('failure');
          break;
        case 'xstate.after.untilRenewal.certificate.valid':
          clock.advanceTo(status()!.renewAt!);
          break;
        case 'xstate.after.untilExpiry.certificate.valid':
        case 'xstate.after.untilExpiry.certificate.attempting.renewing':
          clock.advanceTo(status()!.certificate!.notAfter);
          break;
        case 'xstate.after.untilNextAttempt.certificate.failed-backoff':
          clock.advanceTo(status()!.nextAttemptAt!);
          break;
        case 'FORCE_RENEW':
          engine.forceRenew(NAME).catch(() => {});
          break;
        case 'STORAGE_CHANGED': {
          const ca = localCaIssuer({ leafValidityMs: 91 * DAY, leafKey: testLeafKey() });
          const bundle = await ca.issue({ names: [NAME] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: inner, now: () => clock.now() });
          await seedCertificate(inner, NAME, bundle);
          await engine.refreshFromStorage(NAME);
          break;
        }
        case 'STOP': {
          const stopping = engine.stop();
          release(false); // a load still waiting on the test's gate must not hold stop() up
          await stopping;
          await settleHeld('stopped');
          assert.equal(current, 'stopped');
          return checks;
        }
        default:
          throw new Error(`no replay for ${event.type}`);
      }
      await flush();
      await untilState(engine, () => current, expected);
      assert.equal(engine.status()[0]!.state, expected, `step ${i} (${event.type})`);
      await checkContract(expected);
    }
    // Whatever was held is still waiting: end the path with a stop and check they are released.
    release(false);
    await engine.stop();
    await settleHeld('stopped');
    return checks;
  } catch (error) {
    throw new Error(`${(error as Error).message}\ntrace:\n${trace.join('\n')}`, { cause: error });
  } finally {
    release(false);
    await engine.stop();
    assert.equal(issuer.maxInflight <= 1, true, 'single flight');
  }
}

const describePath = (steps: Array<{ event: ModelEvent; state: { value: unknown } }>) =>
  steps.map((s) => `${s.event.type.replace('xstate.', '')}→${stateOf(s.state.value)}`).join(' ');

describe('model-based: paths through the real machine, replayed on the real engine', () => {
  const { shortest, simple } = modelPaths();

  it('the graph reaches every lifecycle state', () => {
    const reached = new Set(shortest.map((p) => stateOf(p.state.value)));
    for (const s of ['loading', 'obtaining', 'valid', 'renewing', 'expired-renewing', 'failed-backoff', 'stopped'] as const) {
      assert.ok(reached.has(s), `reaches ${s}`);
    }
  });

  it(`replays every shortest path (${shortest.length})`, async () => {
    let checks = 0;
    for (const path of shortest) {
      const steps = replayEvents(path.steps.slice(1).map((s) => s.event));
      assert.ok(steps, `shortest path replays on the machine: ${describePath(path.steps as never)}`);
      try {
        checks += await replay(steps);
      } catch (error) {
        throw new Error(`path: ${describePath(path.steps as never)}\n${(error as Error).message}`, { cause: error });
      }
    }
    assert.ok(checks >= shortest.length);
  });

  it(`replays every simple path (${simple.length})`, async () => {
    let checks = 0;
    let replayed = 0;
    for (const path of simple) {
      const steps = replayEvents(path.steps.slice(1).map((s) => s.event));
      if (!steps) continue; // the graph joined this path through a vertex reached at another time
      try {
        checks += await replay(steps);
        replayed++;
      } catch (error) {
        throw new Error(`path: ${describePath(steps)}\n${(error as Error).message}`, { cause: error });
      }
    }
    assert.ok(replayed >= simple.length * 0.7, `replayed ${replayed} of ${simple.length} simple paths`);
    assert.ok(checks > replayed, `checked ${checks} handshake contracts`);
});
});

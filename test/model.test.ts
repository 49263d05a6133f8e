/**
 * Model-based tests: paths generated from the real lifecycle machine with
 * `xstate/graph` (shortest and simple paths), each replayed on the real
 * engine — scripted issuer, memory storage, simulated clock — asserting at
 * every step that the engine is in the path's state and that a handshake and
 * an operator get what the chart promises there:
 *
 * - a state tagged `serves-certificate` / `serves-expired-certificate` /
 *   `refuses` answers a handshake synchronously (the SNI callback returns
 *   with its answer) and touches no storage;
 * - a state tagged `holds` keeps it, and the next state that does not hold
 *   answers every kept handshake with its own answer;
 * - an operator's `forceRenew` settles only when the attempt it asked for
 *   ends (`valid`: its certificate; `failed-backoff`: its error), storage
 *   could not be read (`storage-unreadable`), or the engine stops.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SecureContext } from 'node:tls';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, stateOf } from '../src/engine/engine.js';
import { serializeFailureRecord } from '../src/engine/stored.js';
import { CertificateUnavailableError, EngineStoppedError, StorageError } from '../src/errors.js';
import { TAGS, type FailureRecord } from '../src/machines/certificate.js';
import { parseCertificateBundle } from '../src/certs.js';
import { keys } from '../src/storage-keys.js';
import { LIFECYCLE_STATES, type CertificateMeta, type LifecycleState, type Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, testLeafKey, type ScriptedIssuer } from './helpers/scripted-issuer.js';
import { refusalsAsErrors, seedCertificate } from './helpers/tls.js';
import { DELAY_TIMERS, LifecycleSpec, type SpecEffects, type SpecEvent, type SpecState } from './helpers/lifecycle-spec.js';
import { isSelfLoop, modelPaths, replayEvents, BACKOFF_MS, NAME, DAY, T0, type CertKind, type LoadVariant, type ModelEvent, type ModelStep } from './helpers/model-paths.js';

/** Longest an operator's forceRenew may wait (engine clock), far beyond any path's time. */
const OPERATOR_TIMEOUT = 1000 * DAY;
/** States in which a replay had an operator join what was in flight (FORCE_RENEW leaves the chart where it is: no graph step). */
const joinedIn = new Set<LifecycleState>();

// ─── The replay's world ────────────────────────────────────────────────────

/**
 * A storage that records every call (so "answered at once" can be checked to
 * touch none), whose loads wait for the test's go (so `loading` can be probed
 * and storage seeded first) or fail while the test says so.
 */
function recordingStorage(inner: Storage) {
  let mode: 'wait' | 'fail' | 'pass' = 'wait';
  let calls = 0;
  const waiting: Array<() => void> = [];
  const storage: Storage = {
    description: 'model',
    load: async (key) => {
      calls++;
      while (mode === 'wait') await new Promise<void>((resolve) => waiting.push(resolve));
      if (mode === 'fail') throw new StorageError('storage down');
      return inner.load(key);
    },
    store: (k, v, o) => (calls++, inner.store(k, v, o)),
    delete: (k) => (calls++, inner.delete(k)),
    list: (p) => (calls++, inner.list(p)),
    stat: (k) => (calls++, inner.stat(k)),
    lock: (k, t, o) => (calls++, inner.lock(k, t, o)),
  };
  return {
    storage,
    get calls() {
      return calls;
    },
    /** Let waiting loads through (or fail them); later loads do the same until `rearm`. */
    release(fail: boolean) {
      mode = fail ? 'fail' : 'pass';
      for (const wake of waiting.splice(0)) wake();
    },
    /** Make the next loads wait again (a load retried after a failure waits for the path's next step). */
    rearm() {
      mode = 'wait';
    },
  };
}

type Outcome<T> = { settled: false } | { settled: true; value: T } | { settled: true; error: Error };

/** A promise's outcome, readable synchronously once settled. */
function watch<T>(promise: Promise<T>): Outcome<T> {
  const outcome: { settled: boolean; value?: T; error?: Error } = { settled: false };
  promise.then(
    (value) => Object.assign(outcome, { settled: true, value }),
    (error: Error) => Object.assign(outcome, { settled: true, error }),
  );
  return outcome as Outcome<T>;
}

interface HeldProbe {
  from: LifecycleState;
  answer?: { ctx?: SecureContext; error?: Error };
}

const tick = () => new Promise<void>((r) => setImmediate(r));
async function flush(n = 6) {
  for (let i = 0; i < n; i++) await tick();
}

async function seed(storage: Storage, clock: ManualClock, kind: CertKind): Promise<CertificateMeta> {
  const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
  const notBefore = { valid: clock.now(), due: clock.now() - 70 * DAY, expired: clock.now() - 100 * DAY }[kind];
  const bundle = await ca.issue({ names: [NAME] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => notBefore + 60_000 });
  await seedCertificate(storage, NAME, bundle);
  return parseCertificateBundle(bundle, 'seed');
}

/** The lifecycle state users see for a state of the spec. */
const shownAs = (state: SpecState): LifecycleState => (state.startsWith('attempting.') ? state.slice('attempting.'.length) : state.split('.')[0]) as LifecycleState;
/** The chart's tag for what the spec says a handshake gets. */
const tagOf = { certificate: TAGS.servesCertificate, 'expired-certificate': TAGS.servesExpiredCertificate, refusal: TAGS.refuses, held: TAGS.holds, stopped: 'stopped' } as const;
/** A snapshot value as the spec names states (`attempting.renewing`). */
const specNameOf = (value: unknown): string => (typeof value === 'string' ? value : Object.entries(value as Record<string, string>).map(([k, v]) => `${k}.${v}`)[0]!);

/** Resolves with `promise`, or fails the test after `ms` of real time (nothing in a replay may hang). */
function bounded<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms))),
  ]);
}

// ─── One path on the real engine ───────────────────────────────────────────

/** Replay one path; returns the number of contracts (handshake probes and settled operators) checked. */
async function replay(steps: ModelStep[], timers: Map<string, string>, serveExpired: boolean): Promise<number> {
  const clock = new ManualClock(T0);
  const inner = memoryStorage();
  await installTestCa(inner);
  const world = recordingStorage(inner);
  const issuer: ScriptedIssuer = scriptedIssuer({ validityMs: 90 * DAY });
  // The attempt deadline is not one of the chart's timers: beyond any time a path moves the clock.
  const attemptTimeout = 10 * 365 * DAY;
  const engine = createCertEngine({ storage: world.storage, issuers: [issuer], names: [NAME], clock, random: () => 0.5, handshakeTimeout: 30_000, attemptTimeout, serveExpired });
  // The oracle: the lifecycle's spec, fed the same events at the same times (lifecycle-spec.ts).
  const spec = new LifecycleSpec(NAME, serveExpired, () => 0.5);
  const emitted: Array<Record<string, unknown> & { type: string }> = [];
  for (const type of ['cert_obtaining', 'cert_obtained', 'cert_renewed', 'cert_failed', 'cert_expired'] as const) engine.on(type, (e) => void emitted.push({ ...e, type }));
  let effects: SpecEffects | undefined;
  const feed = (event: SpecEvent, at = clock.now()) => {
    effects = spec.step(event, at);
    return shownAs(spec.state);
  };
  let current: LifecycleState = 'loading'; // a name is loading before its first event
  const trace: string[] = [];
  engine.on('state_changed', (e) => {
    current = e.to;
    trace.push(`  ${e.from}→${e.to}`);
  });
  engine.on('cert_obtaining', (e) => trace.push(`  attempt ${e.attempt} (${e.reason})`));
  const started = engine.start();
  // The engine answers a refusal with a TLS alert (no context); the probe wants the refusal's typed error.
  const { SNICallback } = refusalsAsErrors(engine);
  const held: HeldProbe[] = [];
  const operators: Array<{ from: LifecycleState; outcome: Outcome<CertificateMeta> }> = [];
  let checks = 0;
  let lastFailure = '';
  const status = () => engine.status()[0]!;

  /** A handshake now: in a state that answers, it is answered synchronously and touches no storage; else it is held. */
  const probe = async (state: LifecycleState, tags: Set<string>) => {
    const callsBefore = world.calls;
    const p: HeldProbe = { from: state };
    SNICallback(NAME, (error, ctx) => (p.answer = error ? { error } : { ...(ctx ? { ctx } : {}) }));
    const atOnce = p.answer !== undefined;
    if (tags.has(TAGS.holds)) {
      assert.ok(!atOnce, `${state}: a handshake is held for what is in flight`);
      held.push(p);
    } else if (tags.has(TAGS.refuses)) {
      assert.ok(atOnce, `${state}: a handshake is refused at once (synchronously)`);
      assert.equal(world.calls, callsBefore, `${state}: …without touching storage`);
      assertRefused(p.answer!.error, state);
    } else if (tags.has(TAGS.servesCertificate) || tags.has(TAGS.servesExpiredCertificate)) {
      assert.ok(atOnce, `${state}: a handshake is answered at once (synchronously)`);
      assert.equal(world.calls, callsBefore, `${state}: …without touching storage`);
      assert.ok(p.answer!.ctx, `${state}: …with a certificate`);
      const served = await engine.getCertificate(NAME);
      assert.equal(served.secureContext, p.answer!.ctx, 'the certificate the chart holds');
      assert.equal(served.meta.fingerprint, status().certificate!.fingerprint);
      assert.equal(served.expired, tags.has(TAGS.servesExpiredCertificate), 'served as expired exactly where the chart says so');
    }
    checks++;
  };

  const assertRefused = (error: Error | undefined, state: string) => {
    assert.ok(error instanceof CertificateUnavailableError, `${state}: refused with CertificateUnavailableError (${error})`);
    assert.ok(error.message.includes(status().lastError!.message), `${state}: …with the recorded error (${status().lastError!.message}): ${error.message}`);
  };

  /** Held handshakes and operators: released exactly when the state they wait for ends, with its answer. */
  const settle = async (state: LifecycleState, tags: Set<string>) => {
    await flush();
    for (const p of held.splice(0)) {
      if (state === 'stopped') {
        assert.ok(p.answer?.error instanceof EngineStoppedError, `a handshake held in ${p.from} is released by stop`);
      } else if (tags.has(TAGS.holds)) {
        assert.equal(p.answer, undefined, `a handshake held in ${p.from} still waits in ${state}`);
        held.push(p);
        continue;
      } else if (tags.has(TAGS.refuses)) {
        assertRefused(p.answer?.error, `a handshake held in ${p.from}, released in ${state}`);
      } else {
        assert.ok(p.answer?.ctx, `a handshake held in ${p.from} gets ${state}'s certificate (${p.answer?.error?.message})`);
        assert.equal(p.answer.ctx, (await engine.getCertificate(NAME)).secureContext);
      }
      checks++;
    }
    for (const op of operators.splice(0)) {
      const outcome = op.outcome;
      if (state === 'valid') {
        assert.ok(outcome.settled && 'value' in outcome, `an operator of ${op.from} gets the attempt's certificate in valid`);
        assert.equal(outcome.value.fingerprint, status().certificate!.fingerprint);
      } else if (state === 'failed-backoff' || state === 'storage-unreadable') {
        assert.ok(outcome.settled && 'error' in outcome, `an operator of ${op.from} gets the error in ${state}`);
        assertRefused(outcome.error, `an operator of ${op.from}, in ${state}`);
        if (state === 'storage-unreadable') assert.equal((outcome.error as CertificateUnavailableError).lastError.code, 'ERR_STORAGE');
      } else if (state === 'stopped') {
        assert.ok(outcome.settled && 'error' in outcome && outcome.error instanceof EngineStoppedError, `an operator of ${op.from} is released by stop`);
      } else {
        assert.ok(!outcome.settled, `an operator of ${op.from} still waits in ${state}`);
        operators.push(op);
        continue;
      }
      checks++;
    }
  };

  const untilState = async (expected: LifecycleState) => {
    for (let i = 0; i < 2000 && current !== expected; i++) await (i < 50 ? tick() : new Promise((r) => setTimeout(r, 1)));
    assert.equal(current, expected);
  };

  try {
    for (const [i, step] of steps.entries()) {
      trace.push(`step ${i}: ${step.event.type}`);
      const event: ModelEvent = step.event;
      const delay = timers.get(event.type);
      effects = undefined;
      if (delay !== undefined) {
        // A timer of the chart: it must be the spec's next timer, and fires when the spec says.
        const kind = DELAY_TIMERS[delay];
        const next = spec.nextTimer();
        assert.equal(next?.timer, kind, `the chart's next timer (${delay}) is the spec's (${next?.timer} in ${spec.state})`);
        clock.advanceTo(next!.at);
        feed({ kind: 'timer', timer: kind! }, next!.at);
      } else {
        switch (event.type) {
          case 'xstate.init':
            break;
          case 'xstate.done.actor.load': {
            const v = event.variant as LoadVariant;
            const certificate = v.certificate ? await seed(inner, clock, v.certificate) : undefined;
            let failure: FailureRecord | undefined;
            if (v.backoff) {
              failure = { attempts: 1, nextAttemptAt: clock.now() + BACKOFF_MS[v.backoff], lastError: { type: 'IssuanceError', message: 'stored failure', at: clock.now() - 1 } };
              await inner.store(keys.failure(NAME), serializeFailureRecord(failure));
              lastFailure = 'stored failure';
            }
            feed({ kind: 'load.done', loaded: { ...(certificate ? { certificate } : {}), ...(failure ? { failure } : {}) } });
            world.release(false);
            await started;
            break;
          }
          case 'xstate.error.actor.load':
            world.release(true);
            await started;
            await untilState(feed({ kind: 'load.error', error: new StorageError('storage down') }));
            lastFailure = 'storage down';
            world.rearm(); // the next read waits for the path's next step
            break;
          case 'xstate.done.actor.attempt': {
            await issuer.untilPending();
            await issuer.succeed();
            // The spec takes the issued certificate as the attempt's output (what the issuer made).
            let issued: CertificateMeta | undefined;
            for (let t = 0; t < 2000 && !issued; t++) {
              issued = emitted.find((e) => e.type === 'cert_obtained' || e.type === 'cert_renewed')?.certificate as CertificateMeta | undefined;
              if (!issued) await (t < 50 ? tick() : new Promise((r) => setTimeout(r, 1)));
            }
            assert.ok(issued, 'the attempt succeeded: cert_obtained or cert_renewed');
            feed({ kind: 'attempt.done', certificate: issued, adopted: false });
            break;
          }
          case 'xstate.error.actor.attempt':
            await issuer.untilPending();
            lastFailure = `scripted failure #${issuer.calls}`;
            issuer.fail(lastFailure);
            feed({ kind: 'attempt.error', error: Object.assign(new Error(lastFailure), { code: 'ERR_SCRIPTED' }) });
            break;
          case 'FORCE_RENEW':
            operators.push({ from: current, outcome: watch(engine.forceRenew(NAME, { timeoutMs: OPERATOR_TIMEOUT })) });
            feed({ kind: 'FORCE_RENEW' });
            break;
          case 'STORAGE_CHANGED': {
            const ca = localCaIssuer({ leafValidityMs: 91 * DAY, leafKey: testLeafKey() });
            const bundle = await ca.issue({ names: [NAME] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: inner, now: () => clock.now() });
            await seedCertificate(inner, NAME, bundle);
            feed({ kind: 'STORAGE_CHANGED', certificate: parseCertificateBundle(bundle, 'seed') });
            await engine.refreshFromStorage(NAME);
            break;
          }
          case 'STOP': {
            feed({ kind: 'STOP' });
            const tags = new Set<string>();
            const stopping = engine.stop();
            world.release(false); // a load still waiting on the test's gate must not hold stop() up
            await stopping;
            await settle('stopped', tags);
            assert.equal(current, 'stopped');
            return checks;
          }
          default:
            throw new Error(`no replay for ${event.type}`);
        }
      }
      // The chart (the path's state) and the engine both agree with the spec.
      assert.equal(specNameOf(step.state.value), spec.state, `step ${i} (${event.type}): the chart's state is the spec's`);
      const expected = shownAs(spec.state);
      const tags = new Set<string>([tagOf[spec.answer(clock.now()).kind]]);
      trace.push(`  expect ${spec.state}`);
      await flush();
      await untilState(expected);
      assert.equal(status().state, expected, `step ${i} (${event.type})`);
      const got = emitted.splice(0).map(({ type, reason, attempt, attempts, nextAttemptAt, adopted }) => ({ type, reason, attempt, attempts, nextAttemptAt, adopted }));
      const want = ((effects as SpecEffects | undefined)?.emitted ?? []).map((e) => ({ type: e.type, ...pick(e as Record<string, unknown>) }));
      assert.deepEqual(got, want, `step ${i} (${event.type}): emitted, by the spec`);
      await settle(expected, tags);
      await probe(expected, tags);
      // Where FORCE_RENEW changes nothing in the chart (an attempt is in flight), an operator joins it here too.
      if (isSelfLoop(step.state, { type: 'FORCE_RENEW', reply: () => {} }, serveExpired)) {
        feed({ kind: 'FORCE_RENEW' });
        assert.equal(shownAs(spec.state), expected, 'the spec agrees: an operator joins what is in flight');
        operators.push({ from: expected, outcome: watch(engine.forceRenew(NAME, { timeoutMs: OPERATOR_TIMEOUT })) });
        joinedIn.add(expected);
        await flush();
        await settle(expected, tags);
      }
    }
    // Whatever is still held waits for what is in flight: end the path with a stop, which releases it.
    world.release(false);
    await engine.stop();
    await settle('stopped', new Set());
    return checks;
  } catch (error) {
    throw new Error(`${(error as Error).message}\nlast failure: ${lastFailure}\ntrace:\n${trace.join('\n')}`, { cause: error });
  } finally {
    world.release(false);
    await engine.stop();
    // Every operator settled, whatever the path did (stop answers the rest): nothing hangs.
    for (const op of operators) await bounded(new Promise<void>((resolve) => {
      const poll = () => (op.outcome.settled ? resolve() : setTimeout(poll, 1));
      poll();
    }), `an operator of ${op.from}`);
    assert.ok(issuer.maxInflight <= 1, 'single flight');
  }
}

/** The payload fields both the engine's events and the spec's carry (a certificate is compared by the state it leads to). */
const pick = (e: Record<string, unknown>) => ({ reason: e.reason, attempt: e.attempt, attempts: e.attempts, nextAttemptAt: e.nextAttemptAt, adopted: e.adopted });

const describePath = (steps: ModelStep[]) => steps.map((s) => `${s.event.type.replace('xstate.', '')}→${stateOf(s.state.value)}`).join(' ');

/** Replay every path that replays on the machine; returns the counts, for the floor checks. */
async function replayAll(paths: Array<{ steps: Array<{ event: ModelEvent }> }>, timers: Map<string, string>, serveExpired: boolean) {
  let checks = 0;
  let replayed = 0;
  let skipped = 0;
  for (const path of paths) {
    const steps = replayEvents(path.steps.slice(1).map((s) => s.event), serveExpired);
    // The graph may join a path through a vertex reached at another (virtual) time; its events then do not replay.
    if (!steps) {
      skipped++;
      continue;
    }
    try {
      checks += await replay(steps, timers, serveExpired);
      replayed++;
    } catch (error) {
      throw new Error(`path: ${describePath(steps)}\n${(error as Error).message}`, { cause: error });
    }
  }
  return { checks, replayed, skipped };
}

describe('model-based: paths through the real machine, replayed on the real engine', () => {
  const { shortest, simple, timers } = modelPaths();

  it('finds its timers in the machine, and its paths reach every lifecycle state and every answer tag', () => {
    assert.deepEqual([...new Set(timers.values())].sort(), ['untilExpiry', 'untilNextAttempt', 'untilRenewal'], 'the delays of the chart');
    assert.ok(timers.size >= 5, `timer transitions found in the machine: ${timers.size}`);
    const reached = new Set(shortest.map((p) => stateOf(p.state.value)));
    // `paused` is for on-demand names only (the actor's input `pauseAfterMs`), which these
    // managed-name replays never are: test/on-demand-budget.test.ts drives it through the engine.
    for (const s of LIFECYCLE_STATES.filter((state) => state !== 'paused')) assert.ok(reached.has(s), `reaches ${s}`);
    assert.ok(!reached.has('paused'), 'a managed name never pauses');
    const tags = new Set(shortest.flatMap((p) => [...p.state.tags]));
    for (const tag of [TAGS.servesCertificate, TAGS.refuses, TAGS.holds, TAGS.maySleep]) assert.ok(tags.has(tag), `reaches a state tagged ${tag}`);
    const operatorStates = new Set(shortest.filter((p) => p.steps.at(-1)?.event.type === 'FORCE_RENEW').map((p) => stateOf(p.steps.at(-2)!.state.value)));
    for (const s of ['loading', 'valid', 'failed-backoff', 'storage-unreadable'] as const) assert.ok(operatorStates.has(s), `an operator acts in ${s}`);
  });

  it(`replays every shortest path (${shortest.length})`, async () => {
    const { checks, replayed, skipped } = await replayAll(shortest, timers, false);
    console.log(`# model: ${shortest.length} shortest paths, ${replayed} replayed, ${skipped} skipped, ${checks} contracts checked`);
    assert.equal(skipped, 0, 'every shortest path replays');
    assert.ok(replayed >= 85, `at least 85 shortest paths (${replayed})`);
    assert.ok(checks >= 3 * replayed, `contracts checked: ${checks}`);
    for (const s of ['obtaining', 'renewing', 'expired-renewing'] as const) assert.ok(joinedIn.has(s), `an operator joined the attempt in ${s}`);
  });

  it(`replays the simple paths of the timers and of the operator (${simple.length})`, async () => {
    const { checks, replayed, skipped } = await replayAll(simple, timers, false);
    console.log(`# model: ${simple.length} simple paths, ${replayed} replayed, ${skipped} skipped, ${checks} contracts checked`);
    assert.ok(replayed >= 350, `at least 350 simple paths replayed (${replayed})`);
    assert.ok(skipped <= 0.3 * simple.length, `at most 30 % skipped (${skipped} of ${simple.length})`);
    assert.ok(checks >= 5 * replayed, `contracts checked: ${checks}`);
  });

  it('with serveExpired: the shortest paths, an expired certificate served where the chart says', async () => {
    const expired = modelPaths(true);
    const tags = new Set(expired.shortest.flatMap((p) => [...p.state.tags]));
    assert.ok(tags.has(TAGS.servesExpiredCertificate), 'reaches serving-expired');
    const { checks, replayed, skipped } = await replayAll(expired.shortest, expired.timers, true);
    console.log(`# model (serveExpired): ${expired.shortest.length} shortest paths, ${replayed} replayed, ${skipped} skipped, ${checks} contracts checked`);
    assert.equal(skipped, 0);
    assert.ok(replayed >= 85, `at least 85 shortest paths (${replayed})`);
  });
});


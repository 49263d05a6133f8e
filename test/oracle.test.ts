/**
 * The chart against its specification: paths from the spec
 * (test/helpers/spec-paths.ts, one per edge of the spec's graph), each
 * replayed on a real actor of the real machine — its effects stubbed, its
 * timers on a test clock, its randomness a seeded sequence shared with the
 * spec — and after every event the actor must agree with the spec on
 *
 * - the state it is in, and its context (certificate, renewal time,
 *   consecutive failures, recorded error, next attempt, forced, the floor's
 *   recent orders, since when the name has been failing);
 * - what it emitted, payloads included;
 * - the failure records it persisted, and the attempts it started (why, and
 *   the per-issuer Retry-After carried into them);
 * - the answers held handshakes and held operators were released with;
 * - the timers armed (their due times: a timer dropped, added or moved fails);
 * - what a handshake gets right then (at once, with what; or held).
 *
 * The spec is not derived from the chart (see lifecycle-spec.ts), so a
 * changed transition, guard, delay or payload fails here. Managed names and
 * on-demand names (which may pause: `pauseAfterMs`) are replayed apart.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createActor, fromPromise } from 'xstate';
import { createCertificateMachine, type AttemptInput, type HandshakeAnswer, type OperatorOutcome } from '../src/machines/certificate.js';
import { defaultTimingPolicy } from '../src/machines/policy.js';
import { seeded } from './helpers/seeded-random.js';
import { LifecycleSpec, TRANSITIONS, type SpecEvent } from './helpers/lifecycle-spec.js';
import { specPaths, timeOf, type SpecPath } from './helpers/spec-paths.js';

const NAME = 'oracle.localhost';
const T0 = Date.UTC(2026, 0, 1);
const DEPTH = 4;
/** An on-demand name's pause (onDemand.pauseAfterMs' default: 3 days). */
const PAUSE_AFTER_MS = 3 * 86_400_000;

/** The actor's clock: timers are visible (due times), time moves only when told. */
class TestClock {
  now = T0;
  #seq = 0;
  #timers = new Map<number, { at: number; fn: () => void }>();
  setTimeout(fn: () => void, ms: number) {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(id: number) {
    this.#timers.delete(id);
  }
  due(): number[] {
    return [...this.#timers.values()].map((t) => t.at).sort((a, b) => a - b);
  }
  advanceTo(target: number) {
    // A chart that re-arms a timer due now forever would spin here: fail instead.
    for (let fired = 0; ; fired++) {
      if (fired > 100) throw new Error('timers keep firing at the same time: a timer loop');
      const next = [...this.#timers.entries()].filter(([, t]) => t.at <= target).sort(([ia, a], [ib, b]) => a.at - b.at || ia - ib)[0];
      if (!next) break;
      this.#timers.delete(next[0]);
      this.now = Math.max(this.now, next[1].at);
      next[1].fn();
    }
    this.now = Math.max(this.now, target);
  }
}

/** Let a settled effect's promise reach the actor (a few microtask turns; no macrotask needed). */
const flush = async () => {
  for (let i = 0; i < 4; i++) await Promise.resolve();
};

type Deferred = { resolve(value: unknown): void; reject(error: unknown): void };

/** What one replay's actor records: the effects the chart asked for, in order. */
interface World {
  clock: TestClock;
  random: () => number;
  log: { handshakes: HandshakeAnswer[]; operators: OperatorOutcome[]; persisted: unknown[]; attempts: AttemptInput[]; emitted: unknown[]; loads: unknown[] };
  inFlight: { load?: Deferred; attempt?: Deferred };
  held: Array<(a: HandshakeAnswer) => void>;
  operators: Array<(o: OperatorOutcome) => void>;
}

/**
 * The real machine with recording stubs for its effects, built once (providing
 * rebuilds the chart's node tree: milliseconds); each replay swaps in its own world.
 */
let current: World;
const provided = createCertificateMachine({ now: () => current.clock.now, random: () => current.random(), policy: defaultTimingPolicy }).provide({
  actors: {
    loadStored: fromPromise(({ input }: { input: unknown }) => {
      current.log.loads.push(input);
      return new Promise((resolve, reject) => (current.inFlight.load = { resolve, reject }));
    }),
    attempt: fromPromise(({ input }: { input: AttemptInput }) => {
      current.log.attempts.push(input);
      return new Promise((resolve, reject) => (current.inFlight.attempt = { resolve, reject }));
    }),
    persistFailure: fromPromise(async ({ input }: { input: { record: unknown } }) => void current.log.persisted.push(input.record)),
  } as never,
  actions: {
    holdHandshake: (_: unknown, { reply }: { reply: (a: HandshakeAnswer) => void }) => void current.held.push(reply),
    holdOperator: (_: unknown, { reply }: { reply?: (o: OperatorOutcome) => void }) => void (reply && current.operators.push(reply)),
    releaseHandshakes: (_: unknown, answer: HandshakeAnswer) => {
      current.log.handshakes.push(answer);
      for (const reply of current.held.splice(0)) reply(answer);
    },
    releaseOperators: (_: unknown, outcome: OperatorOutcome) => {
      current.log.operators.push(outcome);
      for (const reply of current.operators.splice(0)) reply(outcome);
    },
  } as never,
});

function world(serveExpired: boolean, seed: number, pauseAfterMs?: number) {
  const w: World = {
    clock: new TestClock(),
    random: seeded(seed),
    log: { handshakes: [], operators: [], persisted: [], attempts: [], emitted: [], loads: [] },
    inFlight: {},
    held: [],
    operators: [],
  };
  current = w;
  const actor = createActor(provided, { input: { name: NAME, serveExpired, ...(pauseAfterMs !== undefined ? { pauseAfterMs } : {}) }, clock: w.clock as never });
  actor.on('*', (e) => void w.log.emitted.push(e));
  return { ...w, actor };
}

const stateOf = (value: unknown): string => (typeof value === 'string' ? value : Object.entries(value as Record<string, string>).map(([k, v]) => `${k}.${v}`)[0]!);

/** Take what the log holds since the last step. */
const drain = <T>(list: T[]): T[] => list.splice(0);

/** Replay one spec path on the actor; every step checked against the spec. */
async function replay(path: SpecPath, serveExpired: boolean, seed: number, pauseAfterMs?: number): Promise<number> {
  const w = world(serveExpired, seed, pauseAfterMs);
  const spec = new LifecycleSpec(NAME, serveExpired, seeded(seed), pauseAfterMs);
  w.actor.start();
  const trace: string[] = ['start'];
  let checks = 0;
  const check = (what: string) => {
    const snapshot = w.actor.getSnapshot();
    const at = `${trace.join(' → ')}: ${what}`;
    assert.equal(stateOf(snapshot.value), spec.state, `${at}: state`);
    const c = snapshot.context;
    const f = spec.facts;
    assert.deepEqual(
      { certificate: c.certificate, renewAt: c.renewAt, attempts: c.attempts, lastError: c.lastError, nextAttemptAt: c.nextAttemptAt, forced: c.forced, attemptSeq: c.attemptSeq, orders: c.orders, failingSince: c.failingSince },
      { certificate: f.certificate, renewAt: f.renewAt, attempts: f.attempts, lastError: f.lastError, nextAttemptAt: f.nextAttemptAt, forced: f.forced, attemptSeq: f.attemptSeq, orders: f.orders, failingSince: f.failingSince },
      `${at}: context`,
    );
    assert.deepEqual(w.clock.due(), spec.armed.map((t) => t.at).sort((a, b) => a - b), `${at}: timers armed (${spec.armed.map((t) => `${t.node}:${t.timer}@${t.at - w.clock.now}`).join(', ')})`);
    assert.equal(w.operators.length, spec.heldOperators, `${at}: operators held`);
    checks++;
  };
  const probe = () => {
    const expected = spec.answer(w.clock.now);
    if (expected.kind === 'stopped') return;
    let answer: HandshakeAnswer | undefined;
    const heldBefore = w.held.length;
    w.actor.send({ type: 'HANDSHAKE', reply: (a) => (answer = a) });
    const at = `${trace.join(' → ')}: a handshake`;
    if (expected.kind === 'held') {
      assert.equal(answer, undefined, `${at} is held`);
      assert.equal(w.held.length, heldBefore + 1, `${at} is held`);
    } else {
      assert.deepEqual(answer, expected.outcome, `${at} is answered at once`);
    }
    assert.deepEqual(drain(w.log.emitted), [], `${at} emits nothing`);
    assert.equal(stateOf(w.actor.getSnapshot().value), spec.state, `${at} moves nothing`);
    checks++;
  };
  /**
   * A real clock fires a little late: a handshake at the expiry, before the
   * expiry timer moved the state on, is held (never served an expired
   * certificate it did not opt in to). Time is set there without firing
   * anything, then set back.
   */
  const lateProbe = () => {
    const expiry = spec.armed.find((t) => t.timer === 'expiry');
    if (!expiry || spec.answer(w.clock.now).kind !== 'certificate') return;
    const now = w.clock.now;
    w.clock.now = expiry.at;
    try {
      assert.equal(spec.answer(expiry.at).kind, 'held');
      probe();
    } finally {
      w.clock.now = now;
    }
  };
  check('initial');
  assert.deepEqual(drain(w.log.loads), [{ name: NAME }], 'the name is read, by its name');
  assert.ok(w.inFlight.load, 'the name is read at start');
  probe();
  for (const event of path.events) {
    const now = w.clock.now;
    const made: SpecEvent = event.make(spec, now);
    const at = timeOf(spec, made, now);
    trace.push(event.label);
    const loadBefore = w.inFlight.load;
    const resumed = (_: HandshakeAnswer) => {};
    const attemptBefore = w.inFlight.attempt;
    switch (made.kind) {
      case 'timer':
        w.clock.advanceTo(at);
        break;
      case 'load.done':
        w.inFlight.load!.resolve(made.loaded);
        break;
      case 'load.error':
        w.inFlight.load!.reject(made.error);
        break;
      case 'attempt.done':
        w.inFlight.attempt!.resolve({ certificate: made.certificate, adopted: made.adopted, ...(made.ordered !== undefined ? { ordered: made.ordered } : {}) });
        break;
      case 'attempt.error':
        w.inFlight.attempt!.reject(made.error);
        break;
      case 'FORCE_RENEW':
        w.actor.send({ type: 'FORCE_RENEW', reply: () => {} });
        break;
      case 'STORAGE_CHANGED':
        w.actor.send({ type: 'STORAGE_CHANGED', certificate: made.certificate });
        break;
      case 'RENEWAL_INFO':
        w.actor.send({ type: 'RENEWAL_INFO', renewAt: made.renewAt });
        break;
      case 'RESUME':
        // The engine asked permission afresh and got it: this handshake is held for the attempt.
        w.actor.send({ type: 'RESUME', reply: resumed });
        break;
      case 'STOP':
        w.actor.send({ type: 'STOP' });
        break;
    }
    if (made.kind.includes('.')) await flush();
    const expected = spec.step(made, at);
    const where = `${trace.join(' → ')}`;
    assert.deepEqual(drain(w.log.emitted), expected.emitted, `${where}: emitted`);
    assert.deepEqual(drain(w.log.handshakes), expected.releasedHandshakes ? [expected.releasedHandshakes] : [], `${where}: held handshakes released with`);
    assert.deepEqual(drain(w.log.operators), expected.releasedOperators ? [expected.releasedOperators] : [], `${where}: held operators released with`);
    assert.deepEqual(drain(w.log.persisted), expected.persisted, `${where}: failure records persisted`);
    assert.equal(w.held.includes(resumed), expected.heldHandshake === true, `${where}: the event's own handshake held (a RESUME's)`);
    const started = drain(w.log.attempts);
    assert.deepEqual(
      started.map((a) => ({
        reason: a.reason,
        ...(a.issuerRetryAfter ? { issuerRetryAfter: a.issuerRetryAfter } : {}),
        ...(a.orders ? { orders: a.orders } : {}),
        ...(a.forced ? { forced: a.forced } : {}),
        current: a.current,
      })),
      expected.attemptStarted ? [{ ...expected.attemptStarted, current: spec.facts.certificate }] : [],
      `${where}: attempts started`,
    );
    // A read starts on each entry to loading, and only then.
    const readsAgain = expected.handled && spec.state === 'loading' && made.kind !== 'FORCE_RENEW';
    if (readsAgain) assert.notEqual(w.inFlight.load, loadBefore, `${where}: storage is read again`);
    for (const input of drain(w.log.loads)) assert.deepEqual(input, { name: NAME }, `${where}: the read is of the name`);
    if (expected.attemptStarted) assert.notEqual(w.inFlight.attempt, attemptBefore, `${where}: an attempt is invoked`);
    check('after the event');
    probe();
    lateProbe();
  }
  w.actor.stop();
  return checks;
}

async function replayAll(serveExpired: boolean, seed: number, pauseAfterMs?: number) {
  const paths = specPaths(NAME, serveExpired, DEPTH, pauseAfterMs);
  let checks = 0;
  for (const [i, path] of paths.entries()) checks += await replay(path, serveExpired, seed + i, pauseAfterMs);
  const rows = new Set(paths.flatMap((p) => p.rows));
  return { paths: paths.length, checks, rows };
}

describe('the chart against its specification (an oracle of its own)', () => {
  it('every path of the spec replays on the real machine, every step agreeing (serveExpired off)', async () => {
    const { paths, checks, rows } = await replayAll(false, 1);
    console.log(`# oracle: ${paths} spec paths, ${checks} steps checked, ${rows.size} of ${TRANSITIONS.length} rows walked`);
    assert.ok(paths >= 1500, `spec paths: ${paths}`);
    assert.ok(checks >= 10_000, `steps checked: ${checks}`);
    // A managed name never pauses: the paused rows are walked by on-demand names (below).
    const unwalked = TRANSITIONS.map((r, i) => ({ ...r, i })).filter((r) => !rows.has(r.i) && r.when !== 'serveExpired' && r.from !== 'paused');
    assert.deepEqual(unwalked, [], 'every row of the spec (but serveExpired and paused ones) is walked');
    assert.ok(!rows.has(TRANSITIONS.findIndex((r) => r.on === 'RESUME')), 'a managed name is never resumed');
  });

  it('on-demand names, which pause after failing for pauseAfterMs with nothing to serve', async () => {
    const { paths, checks, rows } = await replayAll(false, 9_000_000, PAUSE_AFTER_MS);
    console.log(`# oracle (on-demand): ${paths} spec paths, ${checks} steps checked, ${rows.size} of ${TRANSITIONS.length} rows walked`);
    assert.ok(paths >= 1500, `spec paths: ${paths}`);
    assert.ok(checks >= 10_000, `steps checked: ${checks}`);
    const unwalked = TRANSITIONS.map((r, i) => ({ ...r, i })).filter((r) => !rows.has(r.i) && r.when !== 'serveExpired');
    assert.deepEqual(unwalked, [], 'every row of the spec (but serveExpired ones) is walked, the paused ones too');
  });

  it('and with serveExpired', async () => {
    const { paths, checks, rows } = await replayAll(true, 7_000_000);
    console.log(`# oracle (serveExpired): ${paths} spec paths, ${checks} steps checked`);
    assert.ok(paths >= 1500, `spec paths: ${paths}`);
    assert.ok(checks >= 10_000, `steps checked: ${checks}`);
    assert.ok(rows.has(TRANSITIONS.findIndex((r) => r.when === 'serveExpired')), 'an expiry while serving goes to serving-expired');
  });
});

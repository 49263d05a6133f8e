/**
 * Property-based: random interleavings of handshakes, clock advances, issuer
 * successes and failures, operator retries (in any state, each awaited for its
 * outcome), storage outages and restarts, checked against the lifecycle's
 * invariants after every step. fast-check shrinks a failure to a short,
 * readable command list.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { isStorageFault, StorageError } from '../src/errors.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, type ScriptedIssuer } from './helpers/scripted-issuer.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const NAME = 'prop.localhost';
const MIN = 60_000;
const DAY = 86_400_000;
const HANDSHAKE_TIMEOUT = 30_000;
const OPERATOR_TIMEOUT = 10 * MIN;

/** What a successful issuer call returns: a good certificate, or one the engine must refuse. */
type Quality = 'good' | 'expired' | 'not-yet-valid' | 'near-expiry';
/** The CA's clock against ours, per quality (30-day certificates). */
const SHIFT: Record<Quality, number> = { good: 0, expired: -31 * DAY, 'not-yet-valid': DAY, 'near-expiry': -(30 * DAY - 60 * MIN) };
/** A floor that binds within a run's 25 steps. */
const FLOOR = { maxOrdersPerWindow: 3, orderWindowMs: DAY };

type Command =
  | { kind: 'handshake'; count: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'succeed'; quality: Quality }
  | { kind: 'fail'; retryAfterMs?: number }
  | { kind: 'forceRenew' }
  | { kind: 'storage'; down: boolean }
  | { kind: 'restart' };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('handshake' as const), count: fc.integer({ min: 1, max: 5 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.oneof(fc.integer({ min: 0, max: 2 * MIN }), fc.integer({ min: 0, max: 3 * 60 * MIN }), fc.integer({ min: 0, max: 40 * DAY })),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('succeed' as const),
      quality: fc.oneof({ weight: 3, arbitrary: fc.constant('good' as const) }, fc.constantFrom('expired' as const, 'not-yet-valid' as const, 'near-expiry' as const)),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('fail' as const), retryAfterMs: fc.option(fc.integer({ min: 0, max: 5 * 60 * MIN }), { nil: undefined }) }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'forceRenew' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('storage' as const), down: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'restart' as const }) },
);

interface Probe {
  askedAt: number;
  state: string;
  settled: boolean;
  outcome?: 'certificate' | 'error' | 'timeout' | 'stopped';
}

/** An operator's forceRenew, awaited for its one outcome. */
interface Operator {
  askedAt: number;
  state: string;
  settled: boolean;
  outcome?: string;
}

const flush = async () => {
  for (let i = 0; i < 8; i++) await new Promise((r) => setImmediate(r));
};

/** One world: storage shared across restarts, a simulated clock, a scripted CA, and the invariant bookkeeping. */
class World {
  readonly clock = new ManualClock();
  readonly storage: Storage = memoryStorage();
  /** While down, every read and lock of the engine's storage fails as an unreachable storage does. */
  storageDown = false;
  readonly engineStorage: Storage = (() => {
    const fail = () => Promise.reject(new StorageError('storage unreachable'));
    const wrapped = interceptStorage(this.storage, { load: (key, next) => (this.storageDown ? fail() : next(key)) });
    return { ...wrapped, lock: (k: string, t: number, o?: { signal?: AbortSignal }) => (this.storageDown ? fail() : this.storage.lock(k, t, o)) } as Storage;
  })();
  operators: Operator[] = [];
  /** Operators answered with a certificate or an error (not stop, not a timeout). */
  operatorOutcomes = 0;
  /** Operators whose request may start an attempt before the backoff has elapsed (asked outside an attempt). */
  readonly forcing = new Set<Operator>();
  readonly issuer: ScriptedIssuer = scriptedIssuer({ validityMs: 30 * DAY });
  engine!: CertEngine;
  probes: Probe[] = [];
  /** Earliest time the next attempt may start, from the last failure; reset by a forced retry. */
  notBefore = -Infinity;
  violations: string[] = [];

  /** Every issuer call: when, and whether an operator's request started its attempt. */
  readonly calls: Array<{ at: number; forced: boolean }> = [];
  #forcedAttempt = false;
  /** The last attempt was an operator's (or a retry of one) that ended on our storage's fault. */
  #retryOfForced = false;

  /**
   * `maxLiveActors: 0` puts the name to sleep on every entry to `valid` (and wakes it for each renewal).
   * `ariPast`: a CA whose ARI window is always in the past (every certificate: renew now).
   */
  constructor(
    readonly maxLiveActors?: number,
    readonly serveExpired = false,
    readonly ariPast = false,
  ) {
    const issue = this.issuer.issue.bind(this.issuer);
    this.issuer.issue = (request, context) => {
      this.calls.push({ at: this.clock.now(), forced: this.#forcedAttempt });
      return issue(request, context);
    };
    if (ariPast) this.issuer.renewalInfo = async (_meta, context) => ({ start: context.now() - 2 * 60 * MIN, end: context.now() - 60 * MIN });
  }

  async start(): Promise<void> {
    const engine = createCertEngine({
      storage: this.engineStorage,
      serveExpired: this.serveExpired,
      operatorTimeout: OPERATOR_TIMEOUT,
      issuers: [this.issuer],
      names: [NAME],
      clock: this.clock,
      random: () => 0.5,
      timing: FLOOR,
      handshakeTimeout: HANDSHAKE_TIMEOUT,
      lockTtlMs: 10 * 365 * DAY, // the memory lock runs on real time; an aborted attempt releases it
      ...(this.maxLiveActors === undefined ? {} : { maxLiveActors: this.maxLiveActors }),
    });
    engine.on('cert_failed', (e) => {
      // Our storage failing is a reason to read again (5 s), not a CA backoff: it is not persisted, so a
      // restart that reads storage fine may obtain at once.
      // An operator's attempt that our storage stopped (before or after the CA) is retried as the storage
      // allows, not after the CA backoff it bypassed; the floor still bounds it (checked in check()).
      if (isStorageFault(e.error.code)) {
        this.#retryOfForced = this.#forcedAttempt || this.#retryOfForced;
        return;
      }
      this.#retryOfForced = false;
      this.notBefore = e.nextAttemptAt;
      if (e.error.retryAfter !== undefined && e.nextAttemptAt < e.error.retryAfter) this.violations.push(`backoff ${e.nextAttemptAt} below Retry-After ${e.error.retryAfter}`);
    });
    engine.on('cert_obtaining', (e) => {
      this.#forcedAttempt = e.forced;
      // Invariant 3: no attempt before the backoff has elapsed, unless an operator forced it.
      if (this.forcing.size === 0 && !this.#retryOfForced && this.clock.now() < this.notBefore) this.violations.push(`attempt ${e.attempt} at ${this.clock.now()} before backoff end ${this.notBefore}`);
      this.forcing.clear();
    });
    engine.on('state_changed', (e) => {
      // Storage that could not be read is read again, never a reason to order.
      if (e.from === 'storage-unreadable' && e.to !== 'loading' && e.to !== 'stopped') this.violations.push(`storage-unreadable → ${e.to}`);
    });
    engine.on('cert_obtained', () => ((this.notBefore = -Infinity), (this.#retryOfForced = false)));
    engine.on('cert_renewed', () => ((this.notBefore = -Infinity), (this.#retryOfForced = false)));
    await engine.start();
    this.engine = engine;
  }

  state(): string {
    return this.engine.status()[0]?.state ?? 'none';
  }

  handshake(): void {
    const probe: Probe = { askedAt: this.clock.now(), state: this.state(), settled: false };
    this.probes.push(probe);
    this.engine.getCertificate(NAME).then(
      () => ((probe.settled = true), (probe.outcome = 'certificate')),
      (error: Error) => {
        probe.settled = true;
        probe.outcome = error.name === 'HandshakeTimeoutError' ? 'timeout' : error.name === 'EngineStoppedError' ? 'stopped' : 'error';
      },
    );
  }

  /** Commands that found the name asleep. */
  slept = 0;
  /** Error codes the name rested with (the floor's and the unusable certificate's must show up over the runs). */
  readonly codes = new Set<string>();

  async run(command: Command): Promise<void> {
    this.slept += this.engine.stats.sleeping;
    switch (command.kind) {
      case 'handshake':
        for (let i = 0; i < command.count; i++) this.handshake();
        break;
      case 'advance':
        this.clock.advance(command.ms);
        break;
      case 'succeed':
        if (this.issuer.pending > 0) await this.issuer.succeed(SHIFT[command.quality]);
        break;
      case 'fail':
        if (this.issuer.pending > 0) this.issuer.fail('CA says no', command.retryAfterMs === undefined ? undefined : this.clock.now() + command.retryAfterMs);
        break;
      case 'forceRenew': {
        // In any state: an attempt in flight is joined, a name being read (or unreadable) is read first.
        const state = this.state();
        const operator: Operator = { askedAt: this.clock.now(), state, settled: false };
        this.operators.push(operator);
        if (!['obtaining', 'renewing', 'expired-renewing'].includes(state)) this.forcing.add(operator);
        const settle = (outcome: string) => {
          operator.settled = true;
          operator.outcome = outcome;
          this.forcing.delete(operator);
          if (outcome === 'certificate' || outcome === 'CertificateUnavailableError') this.operatorOutcomes++;
        };
        this.engine.forceRenew(NAME).then(
          (certificate) => {
            settle('certificate');
            // Invariant: an operator's certificate is the one the engine serves once the attempt ended.
            if (this.engine.status()[0]?.certificate?.fingerprint !== certificate.fingerprint) this.violations.push('an operator got a certificate the engine does not hold');
          },
          (error: Error) => settle(error.name),
        );
        break;
      }
      case 'storage':
        this.storageDown = command.down;
        break;
      case 'restart':
        await this.engine.stop();
        await this.start();
        break;
    }
    await flush();
    const code = this.engine.status()[0]?.lastError?.code;
    if (code) this.codes.add(code);
    this.check();
  }

  /** Invariants that must hold after every step. */
  check(): void {
    // 1. Single flight.
    assert.ok(this.issuer.maxInflight <= 1, `single flight: ${this.issuer.maxInflight} attempts in flight at once`);
    // The issuance floor: an order no operator asked for is placed only while fewer than the floor's count were placed in its window.
    for (const [i, call] of this.calls.entries()) {
      if (call.forced) continue;
      const before = this.calls.slice(0, i).filter((c) => c.at > call.at - FLOOR.orderWindowMs).length;
      assert.ok(before < FLOOR.maxOrdersPerWindow, `an order at ${call.at} after ${before} orders in its window (floor ${FLOOR.maxOrdersPerWindow})`);
    }
    // Nothing unusable is served: a certificate the engine holds is valid now (within the clock skew).
    const held = this.engine.status()[0]?.certificate;
    if (held) assert.ok(held.notBefore <= this.clock.now() + 5 * MIN, 'a certificate not valid yet is never held');
    assert.deepEqual(this.violations, []);
    const now = this.clock.now();
    for (const p of this.probes) {
      // 4. Never block on a usable certificate: states that answer at once did.
      if (['valid', 'renewing', 'failed-backoff', 'storage-unreadable'].includes(p.state)) assert.ok(p.settled, `a handshake in ${p.state} was answered at once`);
      // 7. Waits are bounded by handshakeTimeout of (simulated) time.
      if (now - p.askedAt > HANDSHAKE_TIMEOUT) assert.ok(p.settled, `a handshake asked at ${p.askedAt} still waits at ${now}`);
    }
    // A held handshake is settled only by an outcome, its deadline or stop: never left behind by a restart.
    this.probes = this.probes.filter((p) => !p.settled);
    // Nothing in flight and the chart at rest where an attempt or a read ends: every operator has its outcome.
    const resting = ['valid', 'failed-backoff', 'storage-unreadable'].includes(this.state()) && this.issuer.pending === 0 && this.issuer.inflight === 0;
    for (const o of this.operators) {
      if (resting) assert.ok(o.settled, `an operator asked in ${o.state} still waits in ${this.state()} with nothing in flight`);
      // An operator gets one outcome: a certificate, the attempt's (or storage's) error, stopped, or its timeout.
      if (o.settled) assert.ok(['certificate', 'CertificateUnavailableError', 'EngineStoppedError', 'OperatorTimeoutError'].includes(o.outcome!), `an operator got ${o.outcome}`);
      if (o.outcome === 'OperatorTimeoutError') assert.ok(now - o.askedAt >= OPERATOR_TIMEOUT, 'not before its timeout');
      // Bounded: never pending beyond its timeout.
      if (now - o.askedAt > OPERATOR_TIMEOUT) assert.ok(o.settled, `an operator asked at ${o.askedAt} in ${o.state} still waits at ${now}`);
    }
    this.operators = this.operators.filter((o) => !o.settled);
  }
}

/**
 * fast-check's seed: fixed, so the coverage floors below (states reached, floor hit) hold on every run and a
 * failure replays; PROPERTY_SEED=random explores new interleavings (the seed is printed on failure).
 */
const SEED = process.env.PROPERTY_SEED === 'random' ? Date.now() : Number(process.env.PROPERTY_SEED ?? 20261207);

describe('property-based: random interleavings keep the invariants', () => {
  for (const [label, maxLiveActors, serveExpired, numRuns, ariPast] of [
    ['a live actor', undefined, false, 300, false],
    ['a name that sleeps whenever valid (maxLiveActors: 0)', 0, false, 150, false],
    ['serveExpired', undefined, true, 100, false],
    ['a CA whose ARI window is in the past', undefined, false, 60, true],
  ] as const) {
  it(`single flight, backoff, answers at once when usable, bounded waits, one outcome per operator, no leftover timers: ${label}`, async () => {
    let slept = 0;
    const statesSeen = new Set<string>();
    let operatorOutcomes = 0;
    const codes = new Set<string>();
    let fullWindows = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 25 }), async (commands) => {
        const world = new World(maxLiveActors, serveExpired, ariPast);
        await installTestCa(world.storage);
        await world.start();
        try {
          for (const command of commands) {
            await world.run(command);
            statesSeen.add(world.state());
          }
        } finally {
          await world.engine.stop();
        }
        await flush();
        // After stop, every held handshake and every operator was answered.
        assert.ok(world.probes.every((p) => p.settled), 'stop answered every waiting handshake');
        assert.ok(world.operators.every((o) => o.settled), 'stop answered every waiting operator');
        operatorOutcomes += world.operatorOutcomes;
        assert.ok(world.issuer.inflight === 0, 'no attempt left running after stop');
        assert.equal(world.clock.pending, 0, 'stop leaves no timer behind');
        slept += world.slept;
        for (const code of world.codes) codes.add(code);
        if (world.calls.some((call, i) => world.calls.slice(0, i + 1).filter((c) => c.at > call.at - FLOOR.orderWindowMs).length >= FLOOR.maxOrdersPerWindow)) fullWindows++;
      }),
      { numRuns, seed: SEED },
    );
    // The sleeping variant must really have slept (and so woken) names, or it tests nothing new.
    if (maxLiveActors === 0) assert.ok(slept > 50, `names slept ${slept} times over the runs`);
    // The runs must reach the storage outage and the operator's outcomes, or they test nothing new.
    // (The ARI variant's 60 runs are about the floor; the outage is the others' to reach.)
    if (!ariPast) assert.ok(statesSeen.has('storage-unreadable'), `states seen: ${[...statesSeen].join(', ')}`);
    assert.ok(operatorOutcomes > (ariPast ? 5 : 20), `operators answered over the runs: ${operatorOutcomes}`);
    // And the hostile CA's answers: unusable certificates refused, and the floor reached (its count of orders in a window).
    assert.ok(codes.has('ERR_CERTIFICATE_UNUSABLE'), `codes seen: ${[...codes].join(', ')}`);
    assert.ok(fullWindows > 0, `runs that reached the floor: ${fullWindows}`);
  });
  }
});

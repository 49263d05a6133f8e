/**
 * Property-based: random interleavings of handshakes, clock advances, issuer
 * successes, failures and hangs, operator retries and restarts, checked
 * against DESIGN.md §2 invariants after every step. fast-check shrinks a
 * failure to a short, readable command list.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import type { Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, type ScriptedIssuer } from './helpers/scripted-issuer.js';

const NAME = 'prop.localhost';
const MIN = 60_000;
const DAY = 86_400_000;
const HANDSHAKE_TIMEOUT = 30_000;

type Command =
  | { kind: 'handshake'; count: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'succeed' }
  | { kind: 'fail'; retryAfterMs?: number }
  | { kind: 'forceRenew' }
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
  { weight: 3, arbitrary: fc.constant({ kind: 'succeed' as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('fail' as const), retryAfterMs: fc.option(fc.integer({ min: 0, max: 5 * 60 * MIN }), { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'forceRenew' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'restart' as const }) },
);

interface Probe {
  askedAt: number;
  state: string;
  settled: boolean;
  outcome?: 'certificate' | 'error' | 'timeout' | 'stopped';
}

const flush = async () => {
  for (let i = 0; i < 8; i++) await new Promise((r) => setImmediate(r));
};

/** One world: storage shared across restarts, a simulated clock, a scripted CA, and the invariant bookkeeping. */
class World {
  readonly clock = new ManualClock();
  readonly storage: Storage = memoryStorage();
  readonly issuer: ScriptedIssuer = scriptedIssuer({ validityMs: 30 * DAY });
  engine!: CertEngine;
  probes: Probe[] = [];
  /** Earliest time the next attempt may start, from the last failure; reset by a forced retry. */
  notBefore = -Infinity;
  forced = false;
  violations: string[] = [];

  /** `maxLiveActors: 0` puts the name to sleep on every entry to `valid` (and wakes it for each renewal). */
  constructor(readonly maxLiveActors?: number) {}

  async start(): Promise<void> {
    const engine = createCertEngine({
      storage: this.storage,
      issuers: [this.issuer],
      names: [NAME],
      clock: this.clock,
      random: () => 0.5,
      handshakeTimeout: HANDSHAKE_TIMEOUT,
      lockTtlMs: 10 * 365 * DAY, // the memory lock runs on real time; an aborted attempt releases it
      ...(this.maxLiveActors === undefined ? {} : { maxLiveActors: this.maxLiveActors }),
    });
    engine.on('cert_failed', (e) => {
      this.notBefore = e.nextAttemptAt;
      this.forced = false;
      if (e.error.retryAfter !== undefined && e.nextAttemptAt < e.error.retryAfter) this.violations.push(`backoff ${e.nextAttemptAt} below Retry-After ${e.error.retryAfter}`);
    });
    engine.on('cert_obtaining', (e) => {
      // Invariant 3: no attempt before the backoff has elapsed, unless an operator forced it.
      if (!this.forced && this.clock.now() < this.notBefore) this.violations.push(`attempt ${e.attempt} at ${this.clock.now()} before backoff end ${this.notBefore}`);
      this.forced = false;
    });
    engine.on('cert_obtained', () => (this.notBefore = -Infinity));
    engine.on('cert_renewed', () => (this.notBefore = -Infinity));
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
        if (this.issuer.pending > 0) await this.issuer.succeed();
        break;
      case 'fail':
        if (this.issuer.pending > 0) this.issuer.fail('CA says no', command.retryAfterMs === undefined ? undefined : this.clock.now() + command.retryAfterMs);
        break;
      case 'forceRenew': {
        const state = this.state();
        if (state === 'loading' || state.includes('renewing') || state === 'obtaining') break;
        this.forced = true;
        this.engine.forceRenew(NAME).catch(() => {});
        break;
      }
      case 'restart':
        await this.engine.stop();
        await this.start();
        break;
    }
    await flush();
    this.check();
  }

  /** Invariants that must hold after every step. */
  check(): void {
    // 1. Single flight.
    assert.ok(this.issuer.maxInflight <= 1, `single flight: ${this.issuer.maxInflight} attempts in flight at once`);
    assert.deepEqual(this.violations, []);
    const now = this.clock.now();
    for (const p of this.probes) {
      // 4. Never block on a usable certificate: states that answer at once did.
      if (['valid', 'renewing', 'failed-backoff'].includes(p.state)) assert.ok(p.settled, `a handshake in ${p.state} was answered at once`);
      // 7. Waits are bounded by handshakeTimeout of (simulated) time.
      if (now - p.askedAt > HANDSHAKE_TIMEOUT) assert.ok(p.settled, `a handshake asked at ${p.askedAt} still waits at ${now}`);
    }
    // A held handshake is settled only by an outcome, its deadline or stop: never left behind by a restart.
    this.probes = this.probes.filter((p) => !p.settled);
  }
}

describe('property-based: random interleavings keep the invariants', () => {
  for (const [label, maxLiveActors, numRuns] of [
    ['a live actor', undefined, 300],
    ['a name that sleeps whenever valid (maxLiveActors: 0)', 0, 150],
  ] as const) {
  it(`single flight, backoff, answers at once when usable, bounded waits, no leftover timers: ${label}`, async () => {
    let slept = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 25 }), async (commands) => {
        const world = new World(maxLiveActors);
        await installTestCa(world.storage);
        await world.start();
        try {
          for (const command of commands) await world.run(command);
        } finally {
          await world.engine.stop();
        }
        await flush();
        // After stop, every held handshake was answered.
        assert.ok(world.probes.every((p) => p.settled), 'stop answered every waiting handshake');
        assert.ok(world.issuer.inflight === 0, 'no attempt left running after stop');
        assert.equal(world.clock.pending, 0, 'stop leaves no timer behind');
        slept += world.slept;
      }),
      { numRuns },
    );
    // The sleeping variant must really have slept (and so woken) names, or it tests nothing new.
    if (maxLiveActors === 0) assert.ok(slept > 50, `names slept ${slept} times over the runs`);
  });
  }
});

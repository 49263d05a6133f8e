/**
 * Never hammer a CA, whatever it returns (issue 15, items 1–3 and 10),
 * driven through the public API:
 * - the three hot loops of the success path (an issuer returning expired
 *   certificates; certificates whose renewal point is already past, or a host
 *   clock running ahead; a CA whose ARI window is in the past) stay within the
 *   issuance floor over a simulated day, across a restart, and place one order
 *   in 5 real seconds;
 * - nothing unusable is stored or served (not valid yet, from an issuer or from storage);
 * - an operator's forceRenew bypasses the floor and says so;
 * - 40 hung issue() calls starve no one: slots are reserved for renewals and
 *   managed names, and the attempt deadline frees the others;
 * - an issuer's late result (after stop, or past the deadline) is not stored.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine, type CertEngineOptions } from '../src/engine/engine.js';
import { CertificateUnavailableError, IssuanceError } from '../src/errors.js';
import { defaultTimingPolicy } from '../src/machines/policy.js';
import { silentLogger } from '../src/silent-logger.js';
import { keys } from '../src/storage-keys.js';
import type { CertificateBundle, IssueContext, IssueRequest, Issuer, RenewalInfo, Storage } from '../src/types.js';
import { installTestCa, testLeafKey } from './helpers/scripted-issuer.js';
import { seedCertificate } from './helpers/tls.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
/** The default floor (`timing.maxOrdersPerWindow`) and clock skew (`timing.clockSkewMs`). */
const FLOOR = 10;
const SKEW = 5 * MIN;
/** The default `timing.minRenewalIntervalMs`. */
const GAP = 10 * MIN;

const tick = async (n = 6) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/** An issuer that counts its calls and issues real certificates from a local CA, shifted in time by `skewMs` (its clock vs. ours). */
function countingIssuer(options: { validityMs?: number; skewMs?: number; ari?: (now: number) => RenewalInfo } = {}) {
  const ca = localCaIssuer({ leafValidityMs: options.validityMs ?? 90 * DAY, leafKey: testLeafKey() });
  const issuer: Issuer & { calls: number } = {
    id: 'counting',
    calls: 0,
    issue(request: IssueRequest, context: IssueContext) {
      issuer.calls++;
      const skew = options.skewMs ?? 0;
      return ca.issue(request, { ...context, now: () => context.now() + skew });
    },
    ...(options.ari ? { renewalInfo: async (_meta, context: IssueContext) => options.ari!(context.now()) } : {}),
  };
  return issuer;
}

/** The three hot loops of issue 15, as issuers. */
const hotLoops = {
  'an issuer returning already-expired certificates': () => countingIssuer({ validityMs: 30 * DAY, skewMs: -40 * DAY }),
  'certificates whose renewal point is already past (1 hour left of 90 days)': () => countingIssuer({ skewMs: -(90 * DAY - HOUR) }),
  'a host clock 70 days ahead of the CA': () => countingIssuer({ skewMs: -70 * DAY }),
  'a CA whose ARI window is in the past (every certificate: renew now)': () => countingIssuer({ ari: (now) => ({ start: now - 2 * HOUR, end: now - HOUR }) }),
};

async function engineOn(storage: Storage, issuer: Issuer, extra: Partial<CertEngineOptions> = {}): Promise<CertEngine> {
  const engine = createCertEngine({ storage, issuers: [issuer], stopTimeoutMs: 200, ...extra });
  await engine.start();
  return engine;
}

describe('the hot loops of the success path stay within the issuance floor', () => {
  for (const [label, make] of Object.entries(hotLoops)) {
    it(`${label}: at most ${FLOOR} orders over a simulated day, across a restart, ${GAP / MIN} min apart or more; never an unusable certificate served`, async () => {
      const storage = memoryStorage();
      await installTestCa(storage);
      const clock = new ManualClock(Date.now());
      const issuer = make();
      const orderedAt: number[] = [];
      const issue = issuer.issue.bind(issuer);
      issuer.issue = (request, context) => (orderedAt.push(clock.now()), issue(request, context));
      const name = 'loop.localhost';
      const served: string[] = [];
      let engine = await engineOn(storage, issuer, { names: [name], clock, random: () => 0.5 });
      const watch = (e: CertEngine) => e.on('cert_failed', (f) => served.push(f.error.code ?? f.error.type));
      watch(engine);
      const start = clock.now();
      // A simulated day, five minutes at a time, with a restart (same storage) half-way.
      for (let t = 0; t < DAY - 5 * MIN; t += 5 * MIN) {
        if (t === 12 * HOUR) {
          await engine.stop();
          engine = await engineOn(storage, issuer, { names: [name], clock, random: () => 0.5 });
          watch(engine);
        }
        clock.advanceTo(start + t);
        await tick();
        // Whatever state it is in, a handshake never gets an unusable certificate.
        const status = engine.statusOf(name)!;
        if (status.certificate) assert.ok(status.certificate.notAfter > clock.now() && status.certificate.notBefore <= clock.now() + SKEW, 'only a usable certificate is held');
      }
      await engine.stop();
      console.log(`# ${label}: ${issuer.calls} orders in a simulated day (floor ${FLOOR}); failures: ${[...new Set(served)].join(', ') || 'none'}`);
      assert.ok(issuer.calls >= 1, 'it did order');
      assert.ok(issuer.calls <= FLOOR, `${issuer.calls} orders in a day: at most ${FLOOR}`);
      // Failures back off by a minute at least; renewals are never scheduled sooner than the floor after an order.
      const gaps = orderedAt.slice(1).map((at, i) => at - orderedAt[i]!);
      assert.ok(gaps.every((gap) => gap >= (label.includes('ARI') ? GAP : MIN)), `gaps between orders: ${gaps.map((g) => g / MIN).join(', ')} min`);
    });
  }

  it('each hot loop places one order in 5 real seconds (real clock)', async () => {
    const runs = Object.entries(hotLoops).map(async ([label, make], i) => {
      const storage = memoryStorage();
      await installTestCa(storage);
      const issuer = make();
      const name = `real${i}.localhost`;
      const engine = await engineOn(storage, issuer, { names: [name] });
      await new Promise((r) => setTimeout(r, 5000));
      const status = engine.statusOf(name)!;
      await engine.stop();
      return { label, calls: issuer.calls, status };
    });
    for (const { label, calls, status } of await Promise.all(runs)) {
      console.log(`# ${label}: ${calls} order(s) in 5 s, state ${status.state}`);
      assert.equal(calls, 1, `${label}: ${calls} orders in 5 s`);
    }
  });

  it('a CA that fails at once, with a 1 s backoff configured: failed orders count too, the floor bounds them', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    let calls = 0;
    const failing: Issuer = {
      id: 'failing',
      async issue() {
        calls++;
        throw new IssuanceError('CA says no');
      },
    };
    const engine = await engineOn(storage, failing, { names: ['fails.localhost'], clock, timing: { backoffInitialMs: 1000, backoffFactor: 1, backoffMaxMs: 1000 } });
    try {
      const start = clock.now();
      for (let t = 0; t < DAY - 5 * MIN; t += 5 * MIN) {
        clock.advanceTo(start + t);
        await tick();
      }
      assert.ok(calls >= FLOOR - 1 && calls <= FLOOR, `${calls} failed orders in a day: at most ${FLOOR}`);
      assert.equal(engine.statusOf('fails.localhost')!.state, 'failed-backoff');
    } finally {
      await engine.stop();
    }
  });

  it('an expired certificate from the issuer is a typed failure with the normal backoff: not stored, not served', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const name = 'expired.localhost';
    const engine = await engineOn(storage, hotLoops['an issuer returning already-expired certificates'](), { names: [name], clock });
    try {
      await assert.rejects(engine.getCertificate(name), (error: unknown) => {
        assert.ok(error instanceof CertificateUnavailableError);
        assert.equal(error.lastError.code, 'ERR_CERTIFICATE_UNUSABLE');
        assert.equal(error.lastError.type, 'UnusableCertificateError');
        return true;
      });
      const status = engine.statusOf(name)!;
      assert.equal(status.state, 'failed-backoff');
      assert.equal(status.attempts, 1, 'counted like any failure');
      assert.ok(status.nextAttemptAt! >= clock.now() + 0.8 * MIN, 'the normal backoff');
      assert.equal(await storage.load(keys.certificate(name)), undefined, 'nothing stored');
    } finally {
      await engine.stop();
    }
  });
});

describe('certificates not valid yet', () => {
  it('from an issuer (its clock a day ahead): refused, not stored', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const name = 'future.localhost';
    const engine = await engineOn(storage, countingIssuer({ skewMs: DAY }), { names: [name], clock });
    try {
      await assert.rejects(engine.getCertificate(name), (error: unknown) => error instanceof CertificateUnavailableError && error.lastError.code === 'ERR_CERTIFICATE_UNUSABLE' && /not valid before/.test(error.lastError.message));
      assert.equal(await storage.load(keys.certificate(name)), undefined);
    } finally {
      await engine.stop();
    }
  });

  it('from storage (written by a process whose clock runs a day ahead): not served; a valid one is obtained instead', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const name = 'stored-future.localhost';
    const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
    const context = { signal: new AbortController().signal, logger: silentLogger(), storage, now: () => Date.now() + DAY };
    const future: CertificateBundle = await ca.issue({ names: [name] }, context);
    await seedCertificate(storage, name, future);
    const issuer = countingIssuer();
    const engine = await engineOn(storage, issuer, { names: [name] });
    try {
      const served = await engine.getCertificate(name);
      assert.ok(served.meta.notBefore <= Date.now(), 'the certificate served is valid now');
      assert.notEqual(served.certificatePem, future.certificatePem, 'not the one from the future');
      assert.equal(issuer.calls, 1);
    } finally {
      await engine.stop();
    }
  });
});

describe('the floor holds for the cluster, and the operator may bypass it', () => {
  it('an operator\'s forceRenew bypasses the floor, and says so in the event and the log', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const name = 'op.localhost';
    const lines: Array<{ msg: string; fields: Record<string, unknown> }> = [];
    const logger = {
      info() {},
      debug() {},
      error() {},
      warn(fields: Record<string, unknown>, msg: string) {
        lines.push({ fields, msg });
      },
      child() {
        return logger;
      },
    };
    const issuer = countingIssuer();
    const engine = await engineOn(storage, issuer, { names: [name], clock, timing: { maxOrdersPerWindow: 1 }, logger: logger as never });
    const obtaining: Array<{ forced: boolean; floorBypassed: boolean }> = [];
    engine.on('cert_obtaining', (e) => obtaining.push({ forced: e.forced, floorBypassed: e.floorBypassed }));
    try {
      await engine.getCertificate(name);
      // Renewal due while the floor holds (one order per day): no order, the certificate still served.
      const { renewAt } = engine.statusOf(name)!;
      assert.ok(renewAt! - clock.now() < DAY * 90);
      // A second order within the window only by an operator's explicit bypass.
      await engine.forceRenew(name);
      assert.equal(issuer.calls, 2);
      assert.deepEqual(obtaining, [{ forced: true, floorBypassed: true }]);
      assert.ok(lines.some((l) => /bypasses the issuance floor/.test(l.msg) && l.fields.name === name), 'logged');
    } finally {
      await engine.stop();
    }
  });

  it('the window is persisted with the failure record: a new engine on the same storage places no order until it passes', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const name = 'persist.localhost';
    const issuer = countingIssuer({ ari: (now) => ({ start: now - 2 * HOUR, end: now - HOUR }) });
    const timing = { maxOrdersPerWindow: 3 };
    let engine = await engineOn(storage, issuer, { names: [name], clock, timing });
    // Two successful orders (ARI said "renew now"), below the floor: the restart must remember both.
    for (let i = 0; i < 100 && issuer.calls < 2; i++) {
      clock.advance(MIN);
      await tick();
    }
    assert.equal(issuer.calls, 2);
    await engine.stop();
    engine = await engineOn(storage, issuer, { names: [name], clock, timing });
    try {
      for (let t = 0; t < 12 * HOUR; t += 5 * MIN) {
        clock.advance(5 * MIN);
        await tick();
      }
      assert.equal(issuer.calls, 3, 'the restarted engine counts the two orders before it: one more, then the floor');
      assert.ok(engine.statusOf(name)!.certificate, 'and still serves the certificate it has');
    } finally {
      await engine.stop();
    }
  });
});

/** An issuer that never answers for `hang*` names (and ignores the abort), and issues at once for the others. */
function hangingIssuer() {
  const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
  const issuer: Issuer & { hung: number; issued: string[] } = {
    id: 'hanging',
    hung: 0,
    issued: [],
    async issue(request, context) {
      if (request.names[0]!.startsWith('hang')) {
        issuer.hung++;
        return new Promise<CertificateBundle>(() => {});
      }
      issuer.issued.push(request.names[0]!);
      return ca.issue(request, context);
    },
  };
  return issuer;
}

describe('hung attempts starve no one', () => {
  it('40 hung on-demand orders, then a managed name\'s renewal: it finds a reserved slot', { timeout: 20_000 }, async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = hangingIssuer();
    const managed = 'managed.localhost';
    const engine = await engineOn(storage, issuer, {
      names: [managed],
      clock,
      // No deadline within the test: only the reservation can let the renewal through.
      attemptTimeout: 1000 * DAY,
      onDemand: { decide: () => true, rateLimit: { burst: 100, refillPerSecond: 1 } },
    });
    try {
      await engine.getCertificate(managed);
      const handshakes = Array.from({ length: 40 }, (_, i) => engine.getCertificate(`hang${i}.localhost`).catch(() => undefined));
      for (let i = 0; i < 50 && issuer.hung < 24; i++) await tick();
      await tick(20);
      assert.ok(issuer.hung >= 24, `hung orders: ${issuer.hung}`);
      const renewed = new Promise((resolve) => engine.on('cert_renewed', (e) => e.name === managed && resolve(e)));
      clock.advanceTo(engine.statusOf(managed)!.renewAt!);
      await renewed;
      assert.deepEqual(issuer.issued, [managed, managed], 'the managed name renewed while 40 orders hang');
      void handshakes;
    } finally {
      await engine.stop();
    }
  });

  it('40 hung attempts of managed names fail at the attempt deadline (typed error), and free their slots for another name', { timeout: 20_000 }, async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = hangingIssuer();
    const hung = Array.from({ length: 40 }, (_, i) => `hang${i}.localhost`);
    const engine = await engineOn(storage, issuer, { names: [...hung, 'other.localhost'], clock, random: () => 0.5 });
    try {
      for (let i = 0; i < 50 && issuer.hung < 32; i++) await tick();
      await tick(20);
      assert.equal(issuer.issued.length + issuer.hung, 32, 'every slot taken');
      clock.advance(10 * MIN);
      for (let i = 0; i < 100 && !issuer.issued.includes('other.localhost'); i++) await tick();
      assert.ok(issuer.issued.includes('other.localhost'), 'the other name was issued once the deadline freed the slots');
      const failed = engine.status().filter((s) => s.lastError?.code === 'ERR_ATTEMPT_TIMEOUT');
      assert.ok(failed.length >= 1, 'hung attempts failed with AttemptTimeoutError');
      assert.equal(failed[0]!.state, 'failed-backoff');
    } finally {
      await engine.stop();
    }
  });
});

describe('an order that never answered still counts', () => {
  it('a hung order given up at the attempt deadline counts toward the floor: no second order within the window', { timeout: 20_000 }, async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = hangingIssuer();
    const engine = await engineOn(storage, issuer, { names: ['hang.localhost'], clock, timing: { maxOrdersPerWindow: 1 } });
    try {
      for (let i = 0; i < 20 && issuer.hung < 1; i++) await tick();
      clock.advance(10 * MIN); // the deadline
      await tick();
      const status = engine.statusOf('hang.localhost')!;
      assert.equal(status.lastError?.code, 'ERR_ATTEMPT_TIMEOUT');
      assert.ok(status.nextAttemptAt! >= clock.now() + 23 * HOUR, 'the next attempt waits for the window, not for a one-minute backoff');
      for (let t = 0; t < 6 * HOUR; t += 5 * MIN) {
        clock.advance(5 * MIN);
        await tick();
      }
      assert.equal(issuer.hung, 1, 'one order in the window');
    } finally {
      await engine.stop();
    }
  });
});

describe('late results are discarded', () => {
  /** An issuer whose one answer the test releases, whatever the signal says. */
  function lateIssuer() {
    const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
    let release!: () => void;
    const called = new Promise<void>((resolve) => (release = resolve));
    let answer!: (bundle: CertificateBundle) => void;
    const issuer: Issuer & { called: Promise<void>; answer(): Promise<void> } = {
      id: 'late',
      called,
      issue(request, context) {
        release();
        const pending = new Promise<CertificateBundle>((resolve) => (answer = resolve));
        // Issued as a CA that never saw the abort would (the local CA itself honours the signal).
        issuer.answer = async () => answer(await ca.issue(request, { ...context, signal: new AbortController().signal }));
        return pending;
      },
      answer: async () => {},
    };
    return issuer;
  }

  it('an issuer that resolves after stop() gets nothing stored', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = lateIssuer();
    const name = 'late.localhost';
    const engine = createCertEngine({ storage, issuers: [issuer], names: [name], stopTimeoutMs: 2000 });
    await engine.start({ waitForStorage: false });
    await issuer.called;
    const stopped = engine.stop();
    await issuer.answer();
    await stopped;
    await tick(20);
    assert.equal(await storage.load(keys.certificate(name)), undefined, 'the late certificate was not stored');
  });

  it('an issuer that resolves after the attempt deadline gets nothing stored', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = lateIssuer();
    const name = 'late-deadline.localhost';
    const engine = createCertEngine({ storage, issuers: [issuer], names: [name], clock, stopTimeoutMs: 2000 });
    await engine.start({ waitForStorage: false });
    try {
      await issuer.called;
      clock.advance(10 * MIN);
      await tick();
      assert.equal(engine.statusOf(name)!.lastError?.code, 'ERR_ATTEMPT_TIMEOUT');
      await issuer.answer();
      await tick(20);
      assert.equal(await storage.load(keys.certificate(name)), undefined, 'the late certificate was not stored');
      assert.equal(engine.statusOf(name)!.certificate, undefined, 'nor served');
    } finally {
      await engine.stop();
    }
  });
});

it('the documented defaults: a floor of 10 orders a day, 5 min of clock skew, 10 min before a renewal', () => {
  assert.equal(defaultTimingPolicy.maxOrdersPerWindow, FLOOR);
  assert.equal(defaultTimingPolicy.orderWindowMs, DAY);
  assert.equal(defaultTimingPolicy.clockSkewMs, SKEW);
  assert.equal(defaultTimingPolicy.minRenewalIntervalMs, GAP);
});

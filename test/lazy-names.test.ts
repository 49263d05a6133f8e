/**
 * Many names in one process: names beyond `maxLiveActors` sleep as records
 * (served like live ones, woken by their renewal time), key material beyond
 * `cacheCapacity` is evicted least-recently-used and read back once, start-up
 * can serve before every name is read, and a herd shares one answer.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { SecureContext } from 'node:tls';
import { pino } from 'pino';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { WakeQueue } from '../src/engine/wake-queue.js';
import { asleep, Residency, type ResidencyDeps } from '../src/engine/residency.js';
import { StateCounts } from '../src/engine/status-query.js';
import { createCertificateMachine } from '../src/machines/certificate.js';
import { defaultTimingPolicy } from '../src/machines/policy.js';
import { chartQuestions } from '../src/machines/questions.js';
import { chartDecisions } from '../src/machines/decisions.js';
import { StateView } from '../src/engine/state-view.js';
import { MaterialCache } from '../src/engine/material-cache.js';
import { silentLogger } from '../src/silent-logger.js';
import { renderMetrics } from '../src/admin/metrics.js';
import { CertificateUnavailableError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { StorageChange } from '../src/adapters/storage/notify.js';
import type { CertificateMeta, Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, seededStorage } from './helpers/scripted-issuer.js';
import { countingStorage, interceptStorage } from './helpers/storage-wrap.js';
import { refusalsAsErrors } from './helpers/tls.js';

const DAY = 86_400_000;
const T0 = Math.floor(Date.now() / 1000) * 1000;
const namesOf = (n: number) => Array.from({ length: n }, (_, i) => `n${i}.localhost`);
const tick = () => new Promise<void>((r) => setImmediate(r));


const certLoads = (storage: { loads: Map<string, number> }) => [...storage.loads].filter(([k]) => k.startsWith('certificates/')).reduce((a, [, n]) => a + n, 0);

/** Call the SNICallback; `sync` says whether it answered before returning. */
function sniNow(engine: CertEngine, name: string): { sync: boolean; result: Promise<SecureContext> } {
  let settled = false;
  const result = new Promise<SecureContext>((resolve, reject) =>
    refusalsAsErrors(engine).SNICallback(name, (err, ctx) => {
      settled = true;
      return err ? reject(err) : resolve(ctx!);
    }),
  );
  return { sync: settled, result };
}

describe('capacity options', () => {
  it('refuses bad values with ConfigError', async () => {
    const { ConfigError } = await import('../src/errors.js');
    const base = { storage: memoryStorage(), issuers: [scriptedIssuer()] };
    for (const maxLiveActors of [-1, 1.5, Number.NaN]) assert.throws(() => createCertEngine({ ...base, maxLiveActors }), ConfigError);
    for (const cacheCapacity of [0, -3, 2.5]) assert.throws(() => createCertEngine({ ...base, cacheCapacity }), ConfigError);
    assert.doesNotThrow(() => createCertEngine({ ...base, maxLiveActors: 0, cacheCapacity: 1 }));
  });
});

describe('names beyond maxLiveActors sleep', () => {
  it('serves sleeping names like live ones, from memory, without waking them', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(30);
    const storage = countingStorage(await seededStorage(names, clock));
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 5 });
    await engine.start();
    try {
      assert.deepEqual({ ...engine.stats, cachedCertificates: undefined }, { names: 30, liveActors: 5, sleeping: 25, cachedCertificates: undefined, waitingHandshakes: 0 });
      assert.ok(engine.status().every((s) => s.state === 'valid' && s.certificate && s.renewAt! > clock.now()), 'every name is valid, with its renewal time');
      const readsAfterStart = certLoads(storage);
      assert.equal(readsAfterStart, 30, 'each name read once at start');
      for (const name of names) {
        const served = await engine.getCertificate(name);
        assert.equal(served.meta.fingerprint, engine.statusOf(name)!.certificate!.fingerprint);
        assert.ok(served.meta.names.includes(name));
        const sni = sniNow(engine, name);
        assert.equal(sni.sync, true, `${name}: SNICallback answered synchronously`);
        assert.equal(await sni.result, served.secureContext);
      }
      assert.equal(engine.stats.liveActors, 5, 'handshakes do not wake sleeping names');
      assert.equal(certLoads(storage), readsAfterStart, 'no storage read on the handshake path');
      const metrics = renderMetrics(engine.status(), clock.now(), undefined, engine.stats);
      assert.match(metrics, /^certstate_live_actors 5$/m);
      assert.match(metrics, /^certstate_sleeping_names 25$/m);
      assert.match(metrics, /^certstate_names\{state="valid"\} 30$/m);
    } finally {
      await engine.stop();
    }
  });

  it('lists failure records once instead of looking for one per name, and reads the listed one', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(20);
    const inner = await seededStorage(names, clock);
    const { serializeFailureRecord } = await import('../src/engine/stored.js');
    const record = { attempts: 3, lastError: { type: 'IssuanceError', message: 'earlier failure', at: clock.now() - 1000 }, nextAttemptAt: clock.now() + 3_600_000 };
    await inner.store(keys.failure(names[10]!), serializeFailureRecord(record));
    const storage = countingStorage(inner);
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 2 });
    await engine.start();
    try {
      const failureReads = [...storage.loads].filter(([k]) => k.startsWith('failures/')).reduce((a, [, n]) => a + n, 0);
      assert.equal(failureReads, 1, 'only the listed name reads a failure record, not all 20');
      const withRecord = engine.statusOf(names[10]!)!;
      assert.equal(withRecord.attempts, 3, 'the listed record was read and applied');
      assert.equal(withRecord.lastError?.message, 'earlier failure');
      // Its certificate is valid and not due: the chart rests it in `valid`, so it sleeps like the others.
      assert.equal(withRecord.state, 'valid');
      assert.equal(engine.stats.liveActors, 2);
      assert.equal(engine.stats.sleeping, 18);
    } finally {
      await engine.stop();
    }
  });

  it('a name that will attempt reads its own failure record, even one written after the listing', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(10);
    const target = names[7]!;
    const inner = await seededStorage(names.filter((n) => n !== target), clock);
    const { serializeFailureRecord } = await import('../src/engine/stored.js');
    const record = { attempts: 2, lastError: { type: 'IssuanceError', message: 'failed in another process', at: clock.now() }, nextAttemptAt: clock.now() + 3_600_000 };
    // Another process records a failure for the target right after our scan listed the failure records.
    const storage: Storage = {
      ...interceptStorage(inner, {}),
      list: async (prefix) => {
        const listed = await inner.list(prefix);
        if (prefix === 'failures/') await inner.store(keys.failure(target), serializeFailureRecord(record));
        return listed;
      },
    };
    const issuer = scriptedIssuer({ mode: 'manual' });
    const engine = createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: 2 });
    await engine.start();
    try {
      const status = engine.statusOf(target)!;
      assert.equal(status.state, 'failed-backoff', 'the other process\'s backoff holds here');
      assert.equal(status.lastError?.message, 'failed in another process');
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(issuer.calls, 0, 'no order during that backoff');
    } finally {
      await engine.stop();
    }
  });

  it('wakes a sleeping name at its renewal time, renews it once, and puts it back to sleep', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(12);
    const storage = await seededStorage(names, clock);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: 3, random: () => 0.5 });
    await engine.start();
    try {
      assert.equal(engine.stats.sleeping, 9);
      const before = new Map(engine.status().map((s) => [s.name, s.certificate!.fingerprint]));
      const renewAt = Math.max(...engine.status().map((s) => s.renewAt!));
      clock.advanceTo(renewAt);
      for (let i = 0; i < 500 && engine.status().some((s) => s.certificate!.fingerprint === before.get(s.name) || s.state !== 'valid'); i++) {
        await new Promise((r) => setTimeout(r, 2));
      }
      assert.equal(issuer.calls, 12, 'exactly one order per name');
      for (const s of engine.status()) {
        assert.equal(s.state, 'valid', s.name);
        assert.notEqual(s.certificate!.fingerprint, before.get(s.name), `${s.name} renewed`);
        assert.equal((await engine.getCertificate(s.name)).meta.fingerprint, s.certificate!.fingerprint);
      }
      await tick();
      assert.ok(engine.stats.liveActors <= 3, `back under the limit: ${engine.stats.liveActors} live`);
      assert.equal(engine.stats.sleeping + engine.stats.liveActors, 12);
    } finally {
      await engine.stop();
    }
  });

  it("an operator's forceRenew wakes a sleeping name and renews it once", async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(6);
    const storage = await seededStorage(names, clock);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: 1 });
    await engine.start();
    try {
      const sleeper = names[4]!;
      const before = engine.statusOf(sleeper)!.certificate!.fingerprint;
      assert.equal(engine.stats.sleeping, 5);
      const renewed = await engine.forceRenew(sleeper);
      assert.notEqual(renewed.fingerprint, before);
      assert.equal(issuer.calls, 1);
      assert.equal((await engine.getCertificate(sleeper)).meta.fingerprint, renewed.fingerprint);
      await tick();
      assert.equal(engine.stats.liveActors, 1, 'back to sleep once valid again');
    } finally {
      await engine.stop();
    }
  });

  it('adopts a newer certificate another process stored for a sleeping name', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(4);
    const storage = await seededStorage(names, clock);
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 1 });
    await engine.start();
    try {
      const sleeper = names[3]!;
      const old = engine.statusOf(sleeper)!.certificate!;
      clock.advance(DAY);
      const other = createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: [sleeper], clock });
      await installTestCa(other.storage);
      await other.start();
      const fresh = await other.getCertificate(sleeper);
      await other.stop();
      const { serializeStoredCertificate } = await import('../src/engine/stored.js');
      await storage.store(keys.certificate(sleeper), serializeStoredCertificate(fresh, fresh.meta, clock.now()));
      assert.equal(await engine.refreshFromStorage(sleeper), true);
      assert.equal(engine.statusOf(sleeper)!.certificate!.fingerprint, fresh.meta.fingerprint);
      assert.notEqual(fresh.meta.fingerprint, old.fingerprint);
      assert.equal((await engine.getCertificate(sleeper)).meta.fingerprint, fresh.meta.fingerprint);
    } finally {
      await engine.stop();
    }
  });
});

describe('key material beyond cacheCapacity', () => {
  it('keeps at most cacheCapacity certificates and reads an evicted one back once for a herd', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(10);
    const storage = countingStorage(await seededStorage(names, clock));
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 2, cacheCapacity: 3 });
    await engine.start();
    try {
      assert.ok(engine.stats.cachedCertificates <= 3, `cache bounded after start: ${engine.stats.cachedCertificates}`);
      for (const name of names) {
        const key = keys.certificate(name);
        const readsBefore = storage.loads.get(key) ?? 0;
        const herd = await Promise.all(Array.from({ length: 50 }, () => engine.getCertificate(name)));
        assert.equal(new Set(herd.map((s) => s.meta.fingerprint)).size, 1);
        assert.equal(herd[0]!.meta.fingerprint, engine.statusOf(name)!.certificate!.fingerprint);
        assert.ok((storage.loads.get(key) ?? 0) - readsBefore <= 1, `${name}: at most one read for 50 handshakes`);
        assert.ok(engine.stats.cachedCertificates <= 3);
      }
      // The most recently served stays; the least recently used went first.
      const last = names.at(-1)!;
      const reads = storage.loads.get(keys.certificate(last));
      await engine.getCertificate(last);
      assert.equal(storage.loads.get(keys.certificate(last)), reads, 'the most recent certificate is still in memory');
      const first = names[0]!;
      const firstReads = storage.loads.get(keys.certificate(first))!;
      await engine.getCertificate(first);
      assert.equal(storage.loads.get(keys.certificate(first)), firstReads + 1, 'the least recent one was evicted and read back');
    } finally {
      await engine.stop();
    }
  });
});

describe('start-up at scale', () => {
  it('with waitForStorage: false, serves a name read ahead of the background scan', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(300);
    const storage = countingStorage(await seededStorage(names, clock), { delayMs: 5 });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 10 });
    await engine.start({ waitForStorage: false });
    try {
      const last = names.at(-1)!;
      const served = await engine.getCertificate(last);
      assert.ok(served.meta.names.includes(last));
      const unread = engine.status().filter((s) => s.state === 'loading').length;
      assert.ok(unread > 100, `served before the scan read most names (${unread} still unread)`);
      for (let i = 0; i < 1000 && engine.status().some((s) => s.state === 'loading'); i++) await new Promise((r) => setTimeout(r, 5));
      assert.ok(engine.status().every((s) => s.state === 'valid'), 'the scan reads every name');
      assert.equal(certLoads(storage), 300 + 0, 'each name read once (the handshake read was not repeated by the scan)');
    } finally {
      await engine.stop();
    }
  });

  it('a handshake for a configured name right after start() is answered before start() made every record or read every name', async () => {
    const clock = new ManualClock(T0);
    // More names than start() makes records for in one turn of the event loop (start-records.ts); only the asked ones are stored.
    // Last, a certificate of several names: its other name and its wildcard are found before its record is made.
    const group = ['w.localhost', '*.w.localhost'];
    const names: Array<string | string[]> = [...namesOf(9000), group];
    const last = `n8999.localhost`;
    const storage = await seededStorage([last], clock);
    const seeder = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: [group], clock });
    await seeder.start();
    await seeder.getCertificate('w.localhost');
    await seeder.stop();
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: 'manual' })], names, clock, maxLiveActors: 50 });
    let startResolved = false;
    const started = engine.start().then(() => (startResolved = true));
    try {
      // Asked at once (storage's adapters not even ready): never refused as an unknown name, nor one a configured wildcard covers.
      const [served, covered] = await Promise.all([engine.getCertificate(last), engine.getCertificate('a.w.localhost')]);
      assert.ok(served.meta.names.includes(last));
      assert.deepEqual(covered.meta.names, group);
      assert.equal(startResolved, false, 'answered before start() resolved (every name read)');
      const records = engine.stats.names;
      assert.ok(records < names.length, `answered before start() made every record (${records} of ${names.length})`);
    } finally {
      await started;
      await engine.stop();
    }
  });

  it('reads at most 64 names at once, even for 400 names beyond the actor limit', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(400);
    const storage = countingStorage(await seededStorage(names.slice(0, 50), clock), { delayMs: 1 });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: 'manual' })], names, clock, maxLiveActors: 20 });
    await engine.start();
    try {
      // 64 names (2 reads each) plus 32 attempts' re-reads at most.
      assert.ok(storage.maxActive <= 192, `storage reads at once: ${storage.maxActive}`);
      const states = engine.status().reduce<Record<string, number>>((a, s) => ((a[s.state] = (a[s.state] ?? 0) + 1), a), {});
      assert.equal(states.valid, 50, 'every stored certificate is served');
      assert.equal(states.obtaining, 350, 'names with nothing stored are obtaining');
      assert.ok(engine.stats.liveActors >= 350, 'names in an attempt never sleep');
    } finally {
      await engine.stop();
    }
  });
});

describe('ARI at scale', () => {
  it('names read by the background scan ask for their renewal window spread over the recheck interval, not all at once', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(40);
    const storage = await seededStorage(names, clock);
    const asked: string[] = [];
    const askedAt: number[] = [];
    const issuer = {
      ...scriptedIssuer(),
      id: 'seed-ari',
      async renewalInfo(certificate: import('../src/types.js').CertificateMeta, context: import('../src/types.js').IssueContext) {
        asked.push(certificate.names[0]!);
        askedAt.push(context.now());
        return undefined;
      },
    };
    // ARI is asked of the issuer that obtained the certificate: take the stored unit's issuer id.
    const issuerId = engineIssuerId(await storage.load(keys.certificate(names[0]!)));
    issuer.id = issuerId;
    const { ARI_DEFAULT_RECHECK_MS } = await import('../src/engine/ari.js');
    const engine = createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: 5 });
    await engine.start();
    try {
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(asked.length, 0, 'no name read from storage asks at start, live (5) or asleep (35): each waits a random part of the interval');
      clock.advance(ARI_DEFAULT_RECHECK_MS / 2);
      for (let i = 0; i < 5; i++) await tick();
      assert.ok(asked.length > 5 && asked.length < 40, `about half asked by half the interval (${asked.length})`);
      clock.advance(ARI_DEFAULT_RECHECK_MS / 2);
      for (let i = 0; i < 5; i++) await tick();
      assert.equal(new Set(asked).size, 40, 'every name asked within one recheck interval');
      // Due on whole seconds: the names due within one second share one wake of the process.
      assert.deepEqual(askedAt.filter((at) => at % 1000 !== 0), [], 'every recheck asked on a whole second');
      assert.ok(new Set(askedAt).size > 20, 'still spread over the interval');
    } finally {
      await engine.stop();
    }
  });
});

describe('ARI rechecks of sleeping names', () => {
  it('are answered by the chart without an actor: the renewal time follows the window, an unchanged window changes nothing, the name wakes at the new time', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(6);
    const storage = await seededStorage(names, clock);
    const base = scriptedIssuer();
    // The CA's window, relative to each certificate's notBefore.
    let window = { start: 20 * DAY, end: 22 * DAY };
    let asked = 0;
    const issuer = {
      id: engineIssuerId(await storage.load(keys.certificate(names[0]!))),
      issue: (request: Parameters<typeof base.issue>[0], context: Parameters<typeof base.issue>[1]) => base.issue(request, context),
      async renewalInfo(certificate: CertificateMeta) {
        asked++;
        return { start: certificate.notBefore + window.start, end: certificate.notBefore + window.end };
      },
    };
    const HOUR = 3_600_000;
    // random 0.5: every name asks 3 h after start, then every 6 h; the time drawn is the middle of the window.
    const engine = createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: 0, random: () => 0.5 });
    await engine.start();
    const settle = async () => {
      for (let i = 0; i < 10; i++) await tick();
    };
    const renewAts = () => engine.status().map((s) => s.renewAt! - s.certificate!.notBefore);
    try {
      assert.deepEqual({ live: engine.stats.liveActors, sleeping: engine.stats.sleeping }, { live: 0, sleeping: 6 });
      const before = renewAts();
      clock.advance(3 * HOUR);
      await settle();
      assert.equal(asked, 6, 'each name asked once');
      assert.deepEqual(renewAts(), names.map(() => 21 * DAY), 'the renewal time moved into the window (its middle)');
      assert.notDeepEqual(renewAts(), before);
      assert.equal(engine.stats.liveActors, 0, 'no name became an actor');

      // The same window again: the same time drawn, nothing changes.
      const status = engine.status();
      clock.advance(6 * HOUR);
      await settle();
      assert.equal(asked, 12);
      assert.deepEqual(engine.status(), status, 'an unchanged window changes nothing');
      assert.equal(engine.stats.liveActors, 0);

      // The window moves earlier: the names sleep on until the new time, then wake and renew, once each.
      window = { start: 2 * DAY, end: 2 * DAY + 2 * HOUR };
      clock.advance(6 * HOUR);
      await settle();
      assert.deepEqual(renewAts(), names.map(() => 2 * DAY + HOUR));
      assert.equal(engine.stats.liveActors, 0);
      const dueAt = Math.max(...engine.status().map((s) => s.renewAt!));
      // An hour at a time, as real time passes: each recheck's answer arrives before the next one is asked.
      while (clock.now() < dueAt - 60_000) {
        clock.advanceTo(Math.min(dueAt - 60_000, clock.now() + HOUR));
        await settle();
      }
      assert.deepEqual(renewAts(), names.map(() => 2 * DAY + HOUR), 'the same window, asked again meanwhile: the same time');
      assert.equal(base.calls, 0, 'nothing ordered before the new renewal time');
      assert.equal(engine.stats.liveActors, 0);
      clock.advanceTo(dueAt);
      await settle();
      clock.advance(0);
      // The renewals sign with the test CA (real time): wait for them, then for any one more.
      for (let waited = 0; base.calls < 6 && waited < 10_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(base.calls, 6, 'each name woke at its new renewal time and renewed once');
      clock.advance(DAY);
      await settle();
      assert.equal(base.calls, 6, 'the new certificates are not due (their window is 2 days after their notBefore)');
    } finally {
      await engine.stop();
    }
  });
});

function engineIssuerId(raw: string | undefined): string {
  return (JSON.parse(raw!) as { issuerId: string }).issuerId;
}

describe('a reconnected change feed', () => {
  it('logs the resync, re-reads every held name at most 64 at a time, and adopts what changed', async () => {
    const clock = new ManualClock(T0);
    const names = namesOf(300);
    const inner = await seededStorage(names, clock);
    let onChange: ((change: StorageChange) => void) | undefined;
    const storage = Object.assign(countingStorage(inner, { delayMs: 1 }), {
      watch: async (_prefix: string, listener: (change: StorageChange) => void) => {
        onChange = listener;
        return async () => {
          onChange = undefined;
        };
      },
    });
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 50, logger });
    await engine.start();
    try {
      // Another process renewed one name while our feed was down.
      const changed = names[123]!;
      clock.advance(DAY);
      const other = createCertEngine({ storage: memoryStorage(), issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: [changed], clock });
      await installTestCa(other.storage);
      await other.start();
      const fresh = await other.getCertificate(changed);
      await other.stop();
      const { serializeStoredCertificate } = await import('../src/engine/stored.js');
      await inner.store(keys.certificate(changed), serializeStoredCertificate(fresh, fresh.meta, clock.now()));
      await engine._maintenanceSettled(); // the day's session-ticket rotation and storage cleaning read storage too
      storage.resetMaxActive();
      assert.ok(onChange, 'the engine watches storage');
      onChange({ type: 'resync' });
      assert.ok(lines.some((l) => l.includes('change feed reconnected')), 'the reconnection is logged');
      for (let i = 0; i < 500 && engine.statusOf(changed)!.certificate!.fingerprint !== fresh.meta.fingerprint; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(engine.statusOf(changed)!.certificate!.fingerprint, fresh.meta.fingerprint, 'the renewed certificate is adopted');
      assert.ok(storage.maxActive > 0 && storage.maxActive <= 128, `re-reads bounded (64 names, 2 keys each): ${storage.maxActive} at once`);
    } finally {
      await engine.stop();
    }
  });
});

describe('herds share one answer', () => {
  it('a failed attempt answers every waiter with one error object, and backoff refuses without an event per handshake', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = scriptedIssuer({ mode: 'manual' });
    const handshakeEvents: string[] = [];
    const engine = createCertEngine({
      storage,
      issuers: [issuer],
      names: ['herd.localhost'],
      inspect: (e) => {
        if (e.type === '@xstate.event' && (e.event as { type: string }).type === 'HANDSHAKE') handshakeEvents.push(engine.statusOf('herd.localhost')?.state ?? '?');
      },
    });
    await engine.start();
    try {
      await issuer.untilPending();
      const herd = Array.from({ length: 500 }, () => engine.getCertificate('herd.localhost').then(() => undefined, (e: Error) => e));
      await tick();
      issuer.fail('CA says no');
      const errors = await Promise.all(herd);
      assert.ok(errors.every((e) => e instanceof CertificateUnavailableError && e.message.includes('CA says no')));
      assert.equal(new Set(errors).size, 1, 'one error object for the whole herd');
      assert.equal(engine.statusOf('herd.localhost')!.state, 'failed-backoff');
      const eventsBefore = handshakeEvents.length;
      const flood = await Promise.all(Array.from({ length: 200 }, () => engine.getCertificate('herd.localhost').then(() => undefined, (e: Error) => e)));
      assert.equal(new Set(flood).size, 1);
      assert.equal(flood[0], errors[0], 'the backoff refusal is the recorded error, shared');
      assert.equal(handshakeEvents.length, eventsBefore, 'no XState event per handshake during backoff');
      assert.equal(issuer.calls, 1, 'one attempt');
    } finally {
      await engine.stop();
    }
  });
});

describe('a stored key that does not match its certificate', () => {
  it('is refused by OpenSSL at first use, reported as unavailable, and replaced by a new certificate', async () => {
    const clock = new ManualClock(T0);
    const name = 'mismatch.localhost';
    const inner = await seededStorage([name], clock);
    const raw = JSON.parse((await inner.load(keys.certificate(name)))!) as { privateKeyPem: string };
    raw.privateKeyPem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    await inner.store(keys.certificate(name), JSON.stringify(raw));
    const storage = countingStorage(inner);
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, issuers: [issuer], names: [name], clock, logger });
    await engine.start();
    try {
      const bad = engine.statusOf(name)!.certificate!.fingerprint;
      issuer.mode = 'manual'; // hold the replacement while handshakes keep coming
      await assert.rejects(engine.getCertificate(name), CertificateUnavailableError);
      const readsBefore = storage.loads.get(keys.certificate(name)) ?? 0;
      const during = await Promise.all(Array.from({ length: 20 }, () => engine.getCertificate(name).then(() => undefined, (e: Error) => e)));
      assert.ok(during.every((e) => e instanceof CertificateUnavailableError), 'refused while the replacement is under way');
      const reads = (storage.loads.get(keys.certificate(name)) ?? 0) - readsBefore;
      assert.ok(reads <= 1, `a refused pair is not read again for every handshake (${reads} reads for 20: at most the attempt's own re-read)`);
      await issuer.untilPending();
      await issuer.succeed();
      for (let i = 0; i < 500 && engine.statusOf(name)!.certificate!.fingerprint === bad; i++) await new Promise((r) => setTimeout(r, 2));
      assert.equal(issuer.calls, 1, 'one new certificate');
      const served = await engine.getCertificate(name);
      assert.notEqual(served.meta.fingerprint, bad);
      assert.ok(!lines.join('').includes('PRIVATE KEY'), 'no key in the logs');
      assert.ok(lines.some((l) => l.includes('cannot be served')), 'the problem is logged');
    } finally {
      await engine.stop();
    }
  });
});

describe('WakeQueue', () => {
  it('fires each slot once, in time order, at its latest schedule, with one timer', () => {
    const clock = new ManualClock(T0);
    const fired: Array<{ slot: number; at: number }> = [];
    const queue = new WakeQueue<'wake'>(clock, { wake: (slot) => fired.push({ slot, at: clock.now() }) }, (error) => assert.fail(String(error)));
    let seed = 7;
    const rnd = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const expected = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const slot = i % 1000;
      const at = T0 + Math.floor(rnd() * DAY);
      queue.schedule('wake', slot, at);
      expected.set(slot, at);
      assert.ok(clock.pending <= 1, 'one clock timer');
    }
    for (let i = 0; i < 1000; i += 7) {
      queue.cancel('wake', i);
      expected.delete(i);
    }
    assert.equal(queue.size('wake'), expected.size);
    for (let t = T0; t <= T0 + DAY; t += DAY / 97) clock.advanceTo(Math.floor(t));
    clock.advanceTo(T0 + DAY);
    assert.equal(fired.length, expected.size, 'each scheduled slot fired once');
    for (const f of fired) assert.equal(f.at, expected.get(f.slot), `${f.slot} fired at its latest time`);
    for (let i = 1; i < fired.length; i++) assert.ok(fired[i]!.at >= fired[i - 1]!.at, 'in time order');
    assert.equal(queue.size('wake'), 0);
    assert.equal(clock.pending, 0);
  });

  it('keeps kinds apart per slot, grows past its first capacity, and keeps stale entries bounded', () => {
    const clock = new ManualClock(T0);
    const fired: string[] = [];
    const queue = new WakeQueue<'wake' | 'ari'>(
      clock,
      { wake: (slot) => fired.push(`wake:${slot}`), ari: (slot) => fired.push(`ari:${slot}`) },
      (error) => assert.fail(String(error)),
    );
    // Far past the first capacity (64): the per-slot arrays and the heap grow, nothing is lost.
    const slots = 5000;
    for (let slot = slots - 1; slot >= 0; slot--) {
      queue.schedule('wake', slot, T0 + 1000 + slot);
      queue.schedule('ari', slot, T0 + 1000 + 2 * slot);
    }
    assert.equal(queue.dueAt('wake', 4999), T0 + 1000 + 4999);
    assert.equal(queue.dueAt('ari', 4999), T0 + 1000 + 9998);
    assert.equal(queue.dueAt('wake', 123_456), undefined, 'a slot never scheduled');
    // Rescheduling every slot many times leaves stale entries behind: they are compacted away.
    for (let round = 0; round < 5; round++) for (let slot = 0; slot < slots; slot++) queue.schedule('wake', slot, T0 + 1000 + slot + round + 1);
    assert.ok(queue.heapLength <= 2 * (2 * slots) + 1024, `heap bounded (${queue.heapLength})`);
    queue.cancel('ari', 10);
    clock.advance(1000 + 10 + 5);
    // wake:0..10 (each at slot + 5 after the last round), ari:0..7 (at 2 × slot), never ari:10 (cancelled).
    const wakes = fired.filter((f) => f.startsWith('wake:'));
    const aris = fired.filter((f) => f.startsWith('ari:'));
    assert.deepEqual(wakes, Array.from({ length: 11 }, (_, i) => `wake:${i}`));
    assert.deepEqual(aris, Array.from({ length: 8 }, (_, i) => `ari:${i}`));
    assert.equal(queue.size('wake'), slots - 11);
    assert.equal(queue.size('ari'), slots - 9);
  });

  it('a slot cancelled and scheduled again (reused by another name) fires once, at its new time', () => {
    const clock = new ManualClock(T0);
    const fired: Array<{ slot: number; at: number }> = [];
    const queue = new WakeQueue<'wake'>(clock, { wake: (slot) => fired.push({ slot, at: clock.now() }) }, (error) => assert.fail(String(error)));
    queue.schedule('wake', 3, T0 + 500);
    queue.cancel('wake', 3); // the name holding slot 3 is removed …
    queue.schedule('wake', 3, T0 + 900); // … and the slot's next name sleeps until later
    queue.schedule('wake', 4, T0 + 700);
    queue.cancel('wake', 4);
    queue.schedule('wake', 4, T0 + 700); // the same time again: still one firing
    clock.advance(600);
    assert.deepEqual(fired, [], 'the old entry of slot 3 is stale');
    clock.advance(400);
    assert.deepEqual(fired, [
      { slot: 4, at: T0 + 700 },
      { slot: 3, at: T0 + 900 },
    ]);
    assert.equal(clock.pending, 0);
  });

  it('refuses a slot that is not a small non-negative integer', () => {
    const queue = new WakeQueue<'wake'>(new ManualClock(T0), { wake: () => {} }, () => {});
    for (const slot of [-1, 1.5, Number.NaN, 2 ** 32]) assert.throws(() => queue.schedule('wake', slot, T0), RangeError);
  });
});

describe('a sleeping record keeps what waking cannot derive', () => {
  const NOW = Date.UTC(2026, 5, 1);
  const machine = createCertificateMachine({ now: () => NOW, random: () => 0, policy: defaultTimingPolicy });
  const questions = chartQuestions(machine, () => NOW);
  const meta = (notBeforeAgo: number): CertificateMeta => ({
    fingerprint: `fp${notBeforeAgo}`,
    serial: '01',
    names: ['sleep.localhost'],
    notBefore: NOW - notBeforeAgo,
    notAfter: NOW - notBeforeAgo + 90 * DAY,
    issuer: 'CN=test',
    issuerId: 'test',
  });
  /** The context fields the chart rebuilds from a sleeping record. */
  const resumed = (snapshot: ReturnType<typeof questions.afterLoad>) => {
    const { certificate, renewAt, attempts, lastError, nextAttemptAt, orders, failingSince } = snapshot.context;
    return { certificate, renewAt, attempts, lastError, nextAttemptAt, orders, failingSince };
  };

  it('a certificate issued within the floor window: its one order is derived again on waking, not kept', () => {
    const resting = questions.afterLoad({ certificate: meta(3_600_000) });
    assert.deepEqual(resting.context.orders, [NOW - 3_600_000], 'the chart counts the certificate as an order');
    const record = asleep(resting)!;
    assert.equal(record.failure, undefined, 'no failure object, no orders array');
    assert.deepEqual(resumed(questions.afterLoad(record)), resumed(resting), 'waking gives the same context');
  });

  it('orders the chart cannot derive (other times, several) are kept, with the failure that holds them', () => {
    const resting = questions.afterLoad({ certificate: meta(3_600_000), failure: { attempts: 0, orders: [NOW - 7_200_000, NOW - 3_600_000] } });
    assert.equal(resting.value, 'valid');
    const record = asleep(resting)!;
    assert.deepEqual(record.failure?.orders, [NOW - 7_200_000, NOW - 3_600_000]);
    assert.deepEqual(resumed(questions.afterLoad(record)), resumed(resting));
    const other = questions.afterLoad({ certificate: meta(3_600_000), failure: { attempts: 0, orders: [NOW - 60_000] } });
    assert.deepEqual(asleep(other)!.failure?.orders, [NOW - 60_000], 'one order at another time than notBefore');
    assert.deepEqual(resumed(questions.afterLoad(asleep(other)!)), resumed(other));
  });
});

describe('an ARI answer to a sleeping name', () => {
  it('that changes nothing writes nothing: no wake-up scheduled again, the same answer object; one that moves the renewal time moves the wake-up only', () => {
    const NOW = T0;
    const clock = new ManualClock(NOW);
    const deps = { now: () => clock.now(), random: () => 0.5, policy: defaultTimingPolicy };
    const machine = createCertificateMachine(deps);
    const core = { clock, logger: silentLogger(), publish: () => {}, stopped: false, settings: { maxLiveActors: 0, serveExpired: false } };
    const queue = new WakeQueue<'wake' | 'ari'>(clock, { wake: () => assert.fail('no name is due'), ari: () => {} }, (error) => assert.fail(String(error)));
    const view = new StateView(core as unknown as ResidencyDeps['core'], new MaterialCache(10), () => {});
    // The engine's questions: memoised with the machine's own decisions.
    const questions = chartQuestions(machine, () => clock.now(), false, chartDecisions(deps));
    const residency = new Residency({ core, machine, questions, view, queue } as unknown as ResidencyDeps);
    const certificate: CertificateMeta = { fingerprint: 'fp', serial: '01', names: ['ari.localhost'], notBefore: NOW - DAY, notAfter: NOW + 89 * DAY, issuer: 'CN=test', issuerId: 'test' };
    const record = residency.add('ari.localhost', true);
    residency.restOrWake(record, { certificate }, false);
    assert.ok(record.sleeping && !record.actor, 'asleep');
    const renewAt = residency.sleepingOf(record)!.renewAt;
    const [answer, entries, wakeAt] = [record.answer, queue.heapLength, queue.dueAt('wake', record.slot)];

    // A window whose time is the one already chosen, twice.
    residency.sendOrAsk(record, { type: 'RENEWAL_INFO', renewAt });
    residency.sendOrAsk(record, { type: 'RENEWAL_INFO', renewAt });
    assert.equal(queue.heapLength, entries, 'no wake-up scheduled again');
    assert.equal(record.answer, answer, 'the same answer object');
    assert.equal(residency.sleepingOf(record)!.renewAt, renewAt);

    // A new time: the renewal time and the wake-up move, nothing else.
    residency.sendOrAsk(record, { type: 'RENEWAL_INFO', renewAt: renewAt - 10 * DAY });
    assert.equal(residency.sleepingOf(record)!.renewAt, renewAt - 10 * DAY);
    assert.equal(queue.dueAt('wake', record.slot), renewAt - 10 * DAY);
    assert.notEqual(queue.dueAt('wake', record.slot), wakeAt);
    assert.equal(queue.heapLength, entries + 1, 'one wake-up entry');
    assert.equal(record.answer, answer, 'the answer (the same certificate) keeps its object');
    assert.ok(record.sleeping && !record.actor, 'still asleep');
  });
});

describe('residency slots', () => {
  it("a removed name's slot goes to the next name, with none of its schedules", () => {
    const clock = new ManualClock(T0);
    const fired: string[] = [];
    const holder: { residency?: Residency } = {};
    const nameAt = (slot: number) => holder.residency!.bySlot(slot)?.name;
    const queue = new WakeQueue<'wake' | 'ari'>(
      clock,
      { wake: (slot) => fired.push(`wake:${nameAt(slot)}`), ari: (slot) => fired.push(`ari:${nameAt(slot)}`) },
      (error) => assert.fail(String(error)),
    );
    // Only what add/remove use: the state counts and the wake heap.
    const residency = (holder.residency = new Residency({ view: { counts: new StateCounts() }, queue } as unknown as ResidencyDeps));
    const [a, b, c] = ['a.localhost', 'b.localhost', 'c.localhost'].map((name) => residency.add(name, false));
    assert.deepEqual([a!.slot, b!.slot, c!.slot], [0, 1, 2]);
    queue.schedule('ari', b!.slot, T0 + 1000);
    queue.schedule('wake', b!.slot, T0 + 2000);
    residency.remove(b!);
    assert.equal(residency.bySlot(1), undefined);
    const d = residency.add('d.localhost', false);
    assert.equal(d.slot, 1, 'the free slot is reused');
    assert.equal(residency.bySlot(1), d);
    assert.equal(residency.add('e.localhost', false).slot, 3, 'a new slot once none is free');
    clock.advance(3000);
    assert.deepEqual(fired, [], "b's recheck and wake-up did not pass to d");
    queue.schedule('ari', d.slot, T0 + 4000);
    clock.advance(1000);
    assert.deepEqual(fired, ['ari:d.localhost']);
  });
});

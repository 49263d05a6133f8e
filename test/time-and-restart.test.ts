/**
 * Time and restarts: long timers never fire early, renewal happens at the
 * right time, backoff and certificates survive a restart, and a crash in the
 * middle of a write leaves a usable certificate and key.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { ManualClock, MAX_TIMER_MS, realClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { parseStoredCertificate } from '../src/engine/stored.js';
import { keys } from '../src/storage-keys.js';
import { installTestCa, scriptedIssuer, testLeafKey } from './helpers/scripted-issuer.js';
import { seedCertificate } from './helpers/tls.js';

const DAY = 86_400_000;
const NAME = 'time.localhost';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'certstate-time-'));
}

/** A certificate valid for `lifetimeMs` from `now`, stored as a previous run would have. */
async function seedValid(storage: import('../src/types.js').Storage, now: number, lifetimeMs: number) {
  const ca = localCaIssuer({ leafValidityMs: lifetimeMs, leafKey: testLeafKey() });
  const bundle = await ca.issue({ names: [NAME] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => now + 60_000 });
  await seedCertificate(storage, NAME, bundle);
}

describe('the real clock', () => {
  it('does not fire a 30-day timer early (Node fires delays over 2^31-1 ms after 1 ms)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    const clock = realClock();
    let fired = false;
    const handle = clock.setTimeout(() => (fired = true), 30 * DAY);
    await new Promise((r) => setTimeout(r, 200));
    clock.clearTimeout(handle);
    process.off('warning', onWarning);
    assert.equal(fired, false);
    assert.ok(!warnings.includes('TimeoutOverflowWarning'));
    assert.ok(30 * DAY > MAX_TIMER_MS, 'the test delay really is beyond the limit');
  });

  it('fires a short timer on time and honours clearTimeout', async () => {
    const clock = realClock();
    const started = Date.now();
    const keepAlive = setTimeout(() => {}, 1000); // the clock's timers are unref'd: they never hold a process open
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 30));
    clearTimeout(keepAlive);
    assert.ok(Date.now() - started >= 29);
    let fired = false;
    clock.clearTimeout(clock.setTimeout(() => (fired = true), 10));
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(fired, false);
  });
});

describe('renewal timing', () => {
  it('a certificate whose renewal is 60 days away does not renew early with the real clock', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    await seedValid(storage, Date.now(), 90 * DAY);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME] });
    try {
      await engine.start();
      const status = engine.status()[0]!;
      assert.equal(status.state, 'valid');
      assert.ok(status.renewAt! - Date.now() > 55 * DAY, 'renewal is about 60 days away');
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(issuer.calls, 0, 'no attempt within seconds');
      assert.equal(engine.status()[0]!.state, 'valid');
      assert.ok(!warnings.includes('TimeoutOverflowWarning'), 'no TimeoutOverflowWarning');
    } finally {
      process.off('warning', onWarning);
      await engine.stop();
    }
  });

  for (const lifetimeDays of [90, 45, 6]) {
    it(`with the simulated clock a ${lifetimeDays}-day certificate renews at the right time`, async () => {
      const clock = new ManualClock();
      const storage = memoryStorage();
      await installTestCa(storage);
      await seedValid(storage, clock.now(), lifetimeDays * DAY);
      const issuer = scriptedIssuer({ mode: { kind: 'succeed' }, validityMs: lifetimeDays * DAY });
      const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME], clock, random: () => 0.5 });
      await engine.start();
      try {
        const { renewAt, certificate } = engine.status()[0]!;
        const lifetime = certificate!.notAfter - certificate!.notBefore;
        const ratio = lifetimeDays < 10 ? 1 / 2 : 2 / 3;
        const expected = certificate!.notBefore + lifetime * ratio - lifetime * 0.05 * 0.5;
        assert.ok(Math.abs(renewAt! - expected) < 1000, 'renewal at 2/3 of the lifetime (1/2 under 10 days), jittered early');
        clock.advanceTo(renewAt! - 1000);
        await new Promise((r) => setImmediate(r));
        assert.equal(issuer.calls, 0, 'not a second early');
        const renewed = new Promise((r) => engine.on('cert_renewed', r));
        clock.advanceTo(renewAt!);
        await renewed;
        assert.equal(issuer.calls, 1);
        assert.equal(engine.status()[0]!.state, 'valid');
        assert.ok(engine.status()[0]!.certificate!.notAfter > certificate!.notAfter);
      } finally {
        await engine.stop();
      }
    });
  }
});

describe('restart', () => {
  it('backoff and certificates survive stop() and a new engine on the same file storage', async () => {
    const dir = await tempDir();
    try {
      const clock = new ManualClock();
      const issuer = scriptedIssuer({ mode: { kind: 'fail', message: 'CA down' } });
      const first = createCertEngine({ storage: fileStorage(dir), issuers: [issuer], names: [NAME], clock, random: () => 0.5 });
      // Listening before start(): the attempt may fail before start() resolves.
      const failed = new Promise((r) => first.on('cert_failed', r));
      await first.start();
      await failed;
      const { nextAttemptAt, attempts } = first.status()[0]!;
      assert.equal(attempts, 1);
      await first.stop();

      // A restart within the backoff: no attempt, the recorded error is served at once.
      clock.advance(10_000);
      const second = createCertEngine({ storage: fileStorage(dir), issuers: [issuer], names: [NAME], clock, random: () => 0.5 });
      await second.start();
      const status = second.status()[0]!;
      assert.equal(status.state, 'failed-backoff');
      assert.equal(status.nextAttemptAt, nextAttemptAt, 'the persisted backoff is kept');
      await assert.rejects(second.getCertificate(NAME), /CA down/);
      assert.equal(issuer.calls, 1, 'a restart does not reset the backoff');

      // After the backoff the next attempt succeeds; a third engine loads that certificate without issuing.
      issuer.mode = { kind: 'succeed' };
      const obtained = new Promise((r) => second.on('cert_obtained', r));
      clock.advanceTo(nextAttemptAt!);
      await obtained;
      const fingerprint = second.status()[0]!.certificate!.fingerprint;
      await second.stop();
      const third = createCertEngine({ storage: fileStorage(dir), issuers: [issuer], names: [NAME], clock });
      await third.start();
      assert.equal(third.status()[0]!.state, 'valid');
      assert.equal((await third.getCertificate(NAME)).meta.fingerprint, fingerprint);
      assert.equal(issuer.calls, 2);
      await third.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a process killed at random moments while renewing leaves a usable certificate and matching key', async () => {
    const dir = await tempDir();
    try {
      for (let round = 0; round < 4; round++) {
        const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'helpers', 'renew-loop.ts'), dir, NAME], { stdio: ['ignore', 'pipe', 'inherit'] });
        // Wait until it has stored at least one certificate, then kill it mid-flight.
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (d: Buffer) => d.toString().includes('stored') && resolve());
          child.once('exit', (code) => reject(new Error(`renew loop exited early (${code})`)));
        });
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 400));
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));

        const storage = fileStorage(dir);
        const raw = await storage.load(keys.certificate(NAME));
        assert.ok(raw, 'a certificate unit is there');
        const { meta } = parseStoredCertificate(keys.certificate(NAME), raw); // throws if the key does not match the certificate
        assert.ok(meta.names.includes(NAME));
        const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names: [NAME] });
        await engine.start();
        assert.equal((await engine.getCertificate(NAME)).meta.fingerprint, meta.fingerprint);
        await engine.stop();
      }
      // The unit is a fenced write: a directory of versions named by fencing token (file storage's atomic fenced commit).
      const leftovers = (await readdir(join(dir, 'certificates'))).filter((f) => !f.endsWith('.json') && !f.endsWith('.json~v'));
      assert.ok(leftovers.every((f) => f.includes('tmp')), `only temp files may be left behind: ${leftovers.join(', ')}`);
      // A publish removes the versions below it, so versions never pile up; a kill between a publish and that
      // removal (a few ms, hit now and then) leaves the one version below the newest, until the next publish.
      const versions = (await readdir(join(dir, 'certificates', `${NAME}.json~v`))).filter((f) => !f.includes('tmp'));
      assert.ok(versions.length >= 1 && versions.length <= 2, `one version kept, or two after a kill mid-publish: ${versions.join(', ')}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

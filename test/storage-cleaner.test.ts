/**
 * Storage that stays bounded: what the cleaner removes and what it never
 * touches, once per interval for a cluster, file storage's own debris, and a
 * simulated month of churning on-demand names whose storage stays flat.
 */
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { StorageCleaner, cleanerSettings } from '../src/engine/storage-cleaner.js';
import { serializeFailureRecord } from '../src/engine/stored.js';
import { ConfigError, StorageError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { Issuer, Storage } from '../src/types.js';
import { captureLogs } from './helpers/log-capture.js';
import { installTestCa, testLeafKey } from './helpers/scripted-issuer.js';
import { seedCertificate } from './helpers/tls.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const silent = pino({ level: 'silent' });

/** A logger, and the `storage cleaned` lines it got (one per run). */
function capture() {
  const logs = captureLogs('info');
  return { logger: logs.logger, runs: () => logs.lines().filter((l) => l.includes('"storage cleaned"')).map((l) => JSON.parse(l) as Record<string, any>) };
}

/** Store a certificate for `name` valid from `notBefore` for `validityMs`. */
async function seed(storage: Storage, name: string, notBefore: number, validityMs: number): Promise<void> {
  const ca = localCaIssuer({ leafValidityMs: validityMs, leafKey: testLeafKey() });
  const bundle = await ca.issue({ names: [name] }, { storage, signal: new AbortController().signal, logger: silent, now: () => notBefore });
  await seedCertificate(storage, name, bundle);
}

/** Set a file's modification time `ms` into the past (a crash that long ago). */
async function ago(file: string, ms: number): Promise<void> {
  const at = new Date(Date.now() - ms);
  await utimes(file, at, at);
}

const failureAt = (at: number) => serializeFailureRecord({ attempts: 3, lastError: { type: 'IssuanceError', message: 'CA down', at }, nextAttemptAt: at + 60_000 });

describe('what the storage cleaner removes', () => {
  it('expired past the grace period and neither managed nor held: gone, with its failure record; everything else stays', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const storage = memoryStorage({ now: () => clock.now() }); // stamps `modified` from the clock
    await installTestCa(storage);
    // Everything is set up relative to the first run, 15 days (and a minute or two) from now.
    const run = clock.now() + 15 * DAY + 2 * 60_000;
    const expiring = async (name: string, notAfter: number) => seed(storage, name, notAfter - 30 * DAY, 30 * DAY);
    await expiring('managed.example.com', run - 30 * DAY); // expired long ago, but managed
    await expiring('held.example.com', run - 30 * DAY); // expired long ago, but this process holds the name
    await expiring('gone.example.com', run - 30 * DAY); // goes
    await expiring('busy.example.com', run - 30 * DAY); // goes, but an attempt holds its lock at the first run
    await expiring('recent.example.com', run - 10 * DAY); // within the grace period at the first run
    await expiring('valid.example.com', run + 29 * DAY);
    await storage.store(keys.failure('gone.example.com'), failureAt(run - 31 * DAY));
    await storage.store(keys.failure('never.example.com'), failureAt(run - 20 * DAY)); // never got a certificate, gave up long ago
    await storage.store(keys.failure('trying.example.com'), failureAt(run - 2 * DAY)); // still failing lately
    await storage.store(keys.failure('held.example.com'), failureAt(run - 20 * DAY));
    await storage.store(keys.http01('old-token'), 'key-authorization');
    await storage.store(keys.certificate('corrupt-old.example.com'), '{"version":1,"certificatePem":'); // truncated, 15 days old
    clock.advance(14 * DAY);
    await storage.store(keys.http01('fresh-token'), 'key-authorization');
    await storage.store(keys.certificate('corrupt-new.example.com'), '{"version":1,"certificatePem":'); // truncated, but a day old
    const attempt = await storage.lock(keys.issueLock('busy.example.com'), 60 * DAY);

    const { logger, runs } = capture();
    const cleaner = new StorageCleaner({ storage, clock, logger, random: () => 1, keeps: (name) => name === 'managed.example.com' || name === 'held.example.com' });
    clock.advance(DAY - 3 * 60_000);
    cleaner.start(); // first check two minutes from now (random() = 1)
    clock.advanceTo(run);
    await cleaner.settled();
    const remaining = [...(await storage.list('certificates/')), ...(await storage.list('failures/')), ...(await storage.list('challenges/'))];
    assert.deepEqual(remaining.sort(), [
      keys.http01('fresh-token'),
      keys.certificate('busy.example.com'),
      keys.certificate('corrupt-new.example.com'),
      keys.certificate('held.example.com'),
      keys.certificate('managed.example.com'),
      keys.certificate('recent.example.com'),
      keys.certificate('valid.example.com'),
      keys.failure('held.example.com'),
      keys.failure('trying.example.com'),
    ].sort());
    assert.equal(runs().length, 1);
    const [first] = runs();
    assert.deepEqual([first!.certificates, first!.failures, first!.challenges], [2, 1, 1], 'gone and corrupt-old; never; old-token');

    // The attempt ends; the next day's run removes the name it had to leave.
    await attempt.release();
    clock.advance(DAY + 2 * 60_000);
    await cleaner.settled();
    assert.equal(runs().length, 2);
    assert.equal(await storage.load(keys.certificate('busy.example.com')), undefined, 'removed once its lock was free');
    assert.ok(await storage.load(keys.certificate('recent.example.com')), 'expired 11 days ago: still within its grace period');
    clock.advance(4 * DAY);
    await cleaner.settled();
    assert.equal(await storage.load(keys.certificate('recent.example.com')), undefined, 'gone once the grace period passed');
    assert.ok(await storage.load(keys.certificate('managed.example.com')), 'a managed name is never touched');
    await cleaner.stop();
    assert.equal(clock.pending, 0, 'no timer left');
  });

  it('options are validated', () => {
    assert.throws(() => cleanerSettings({ intervalMs: 10 }), ConfigError);
    assert.throws(() => cleanerSettings({ gracePeriodMs: -1 }), ConfigError);
    assert.deepEqual(cleanerSettings(), { intervalMs: DAY, gracePeriodMs: 14 * DAY });
  });
});

describe('the storage cleaner across a cluster', () => {
  async function engineOn(storage: Storage, clock: ManualClock, logger: pino.Logger, storageCleaner?: false): Promise<CertEngine> {
    const engine = createCertEngine({ storage, clock, logger, issuers: [localCaIssuer()], names: [], sessionTickets: false, ...(storageCleaner === false ? { storageCleaner } : {}) });
    await engine.start();
    return engine;
  }

  it('two engines sharing storage run it once per interval between them', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const storage = memoryStorage({ now: () => clock.now() });
    const a = capture();
    const b = capture();
    const engines = [await engineOn(storage, clock, a.logger), await engineOn(storage, clock, b.logger)];
    try {
      const lastRuns: number[] = [];
      for (let step = 0; step < (10 * DAY + 3 * HOUR) / (5 * 60_000); step++) {
        clock.advance(5 * 60_000);
        await Promise.all(engines.map((e) => e._maintenanceSettled()));
        const raw = await storage.load(keys.storageCleanerRecord);
        const at = raw === undefined ? undefined : (JSON.parse(raw) as { lastRunAt: number }).lastRunAt;
        if (at !== undefined && at !== lastRuns.at(-1)) lastRuns.push(at);
      }
      assert.equal(lastRuns.length, 11, 'one run at start, then one a day');
      assert.equal(a.runs().length + b.runs().length, 11, 'each run by one engine only');
      for (let i = 1; i < lastRuns.length; i++) assert.ok(lastRuns[i]! - lastRuns[i - 1]! >= DAY, `runs ${i - 1} and ${i} are an interval apart`);
    } finally {
      await Promise.all(engines.map((e) => e.stop()));
    }
  });

  it('storageCleaner: false never runs it', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const storage = memoryStorage({ now: () => clock.now() });
    const { logger, runs } = capture();
    const engine = await engineOn(storage, clock, logger, false);
    try {
      clock.advance(3 * DAY);
      await engine._maintenanceSettled();
      assert.equal(runs().length, 0);
      assert.equal(await storage.load(keys.storageCleanerRecord), undefined);
    } finally {
      await engine.stop();
    }
  });
});

describe("file storage's own debris (Storage.sweep)", () => {
  async function tempRoot(): Promise<string> {
    return mkdtemp(path.join(os.tmpdir(), 'certstate-sweep-'));
  }

  it('removes old temp files and dead lock directories; keeps held locks, writes in flight, values and whatever a link points at', async () => {
    const root = await tempRoot();
    const outside = await tempRoot();
    try {
      const storage = fileStorage(root);
      await storage.store('certificates/a.example.com.json', 'value');
      const certificates = path.join(root, 'certificates');
      await writeFile(path.join(certificates, 'a.example.com.json~tmp~1-dead'), 'x'.repeat(100));
      await ago(path.join(certificates, 'a.example.com.json~tmp~1-dead'), 2 * HOUR);
      await writeFile(path.join(certificates, 'b.example.com.json~tmp~2-inflight'), 'y');

      const released = await storage.lock('locks/issue/released.example.com', 60_000);
      await released.release();
      const held = await storage.lock('locks/issue/held.example.com', 60_000);
      const expired = await storage.lock('locks/issue/expired.example.com', 1);
      await new Promise((r) => setTimeout(r, 5));
      // A link inside the lock tree to a directory outside the root: never followed.
      await writeFile(path.join(outside, 'precious'), 'do not touch');
      await symlink(outside, path.join(root, '~locks', 'locks', 'issue', 'link~'));

      const result = await storage.sweep!({ before: Date.now() + DAY });
      const lockDirs = await readdir(path.join(root, '~locks', 'locks', 'issue'));
      assert.deepEqual(lockDirs.sort(), ['held.example.com~', 'link~'], 'released and expired locks gone; the held one stays');
      assert.ok((await readdir(certificates)).includes('b.example.com.json~tmp~2-inflight'), 'a temp file younger than an hour may be a write in flight');
      assert.ok(!(await readdir(certificates)).includes('a.example.com.json~tmp~1-dead'));
      assert.equal(await storage.load('certificates/a.example.com.json'), 'value', 'values are not debris');
      assert.ok((await lstat(path.join(outside, 'precious'))).isFile());
      assert.ok(result.removed >= 3 && result.bytes >= 100, `counted: ${JSON.stringify(result)}`);

      // A lock whose directory was swept can be taken again; one written after `before` stays.
      const again = await storage.lock('locks/issue/released.example.com', 60_000);
      await again.release();
      await storage.sweep!({ before: Date.now() - HOUR });
      assert.ok((await readdir(path.join(root, '~locks', 'locks', 'issue'))).includes('released.example.com~'), 'released after `before`: kept');
      await held.release();
      await expired.release();
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(outside, { recursive: true, force: true });
    }
  });
});

describe("file storage's fenced deletes (tombstones) stay bounded", () => {
  it('a key deleted under its fence leaves nothing once its tombstone is older than `before`; a younger one still hides the value; a newer unfenced write survives', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'certstate-tombstones-'));
    try {
      const storage = fileStorage(root);
      // 50 names validated over TLS-ALPN-01: the challenge record stored and deleted under the name's lock, as the ACME issuer does.
      for (let i = 0; i < 50; i++) {
        const name = `alpn${i}.example.com`;
        const lock = await storage.lock(keys.issueLock(name), 60_000);
        const fence = { lockKey: lock.key, token: lock.fencingToken };
        await storage.store(keys.tlsAlpn01(name), 'challenge certificate', { fence });
        await storage.delete(keys.tlsAlpn01(name), { fence });
        await storage.delete(keys.failure(name), { fence }); // an attempt that succeeded clears the failure record
        await lock.release();
      }
      const alpnDir = path.join(root, 'challenges', 'tls-alpn-01');
      assert.equal((await readdir(alpnDir)).length, 50, 'one tombstone directory per name before the sweep');
      assert.deepEqual(await storage.list('challenges/'), []);

      const result = await storage.sweep!({ before: Date.now() + DAY });
      assert.deepEqual(await readdir(alpnDir), [], 'challenge tombstones compacted');
      assert.deepEqual(await readdir(path.join(root, 'failures')), [], 'failure-record tombstones compacted');
      assert.ok(result.removed >= 200, `counted: ${JSON.stringify(result)}`);

      // A value hidden by a tombstone younger than `before`: both stay, the key stays deleted.
      const key = 'challenges/tls-alpn-01/hidden.example.com';
      await storage.store(key, 'old value');
      const lock = await storage.lock(keys.issueLock('hidden.example.com'), 60_000);
      await storage.delete(key, { fence: { lockKey: lock.key, token: lock.fencingToken } });
      await lock.release();
      await storage.sweep!({ before: Date.now() - HOUR });
      assert.equal(await storage.load(key), undefined, 'still deleted');
      assert.ok((await readdir(alpnDir)).includes('hidden.example.com~v'), 'a young tombstone is kept');
      // Once old: the hidden value goes first, then the tombstone; the key stays deleted.
      const versions = path.join(alpnDir, 'hidden.example.com~v');
      for (const name of await readdir(versions)) await ago(path.join(versions, name), 2 * DAY);
      await ago(path.join(alpnDir, 'hidden.example.com'), 3 * DAY);
      await storage.sweep!({ before: Date.now() - DAY });
      assert.deepEqual(await readdir(alpnDir), [], 'the hidden value and its tombstone are gone');
      assert.equal(await storage.load(key), undefined);

      // An unfenced write that landed after the tombstone (its versions not dropped yet) is never lost.
      const lock2 = await storage.lock(keys.issueLock('hidden.example.com'), 60_000);
      await storage.delete(key, { fence: { lockKey: lock2.key, token: lock2.fencingToken } });
      await lock2.release();
      for (const name of await readdir(versions)) await ago(path.join(versions, name), 2 * DAY);
      await writeFile(path.join(alpnDir, 'hidden.example.com'), 'newer value');
      await storage.sweep!({ before: Date.now() - DAY });
      assert.equal(await storage.load(key), 'newer value');

      // A fenced write refused for a stale token leaves no directory behind.
      await assert.rejects(storage.store('failures/stale.example.com.json', 'x', { fence: { lockKey: keys.issueLock('stale.example.com'), token: 5 } }), { code: 'ERR_FENCED' });
      assert.deepEqual(await readdir(path.join(root, 'failures')), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

/** Files and bytes under `dir`, every file counted (values, lock generations, temp files); what vanishes meanwhile is not. */
async function footprint(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const walk = async (d: string) => {
    for (const entry of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        const stats = await lstat(full).catch(() => undefined);
        if (!stats) continue;
        files++;
        bytes += stats.size;
      }
    }
  };
  await walk(dir);
  return { files, bytes };
}

describe('a simulated month of churning on-demand names', () => {
  it('file storage stays flat; a managed name keeps its certificate; one within its grace period is kept', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'certstate-month-'));
    const PER_DAY = 4;
    const DAYS = 40;
    const VALIDITY = 5 * DAY;
    let engine: CertEngine | undefined;
    try {
      // Starts at the real time: file storage stamps files (and judges locks) on the real clock.
      const clock = new ManualClock(Date.now());
      const storage = fileStorage(root);
      await installTestCa(storage);
      const ca = localCaIssuer({ leafValidityMs: VALIDITY, leafKey: testLeafKey() });
      // The managed name's renewals all fail, with an error of our own storage (not persisted as a
      // failure record, which would keep the name anyway): only its being managed keeps its certificate.
      const issuer: Issuer = {
        id: 'month',
        issue: (request, context) => (request.names[0] === 'managed.example.com' && managedFails ? Promise.reject(new StorageError('account storage down')) : ca.issue(request, context)),
      };
      let managedFails = false;
      const allowed = new Set<string>();
      const { logger, runs } = capture();
      engine = createCertEngine({
        storage,
        clock,
        logger,
        issuers: [issuer],
        names: ['managed.example.com'],
        onDemand: { decide: (name) => allowed.has(name), rateLimit: { burst: 100, refillPerSecond: 1 } },
        timing: { storageRetryMs: 6 * HOUR }, // (5 s by default: a month of retries)
        // The clock jumps by hours while file I/O runs on real time: an attempt deadline would fire mid-write.
        attemptTimeout: 1000 * DAY,
        sessionTickets: false,
      });
      await engine.start();
      await engine.getCertificate('managed.example.com');
      managedFails = true;
      // Debris of a crash long ago, and a failure record of a name gone since.
      await writeFile(path.join(root, 'certificates', 'crashed.example.com.json~tmp~9-dead'), 'x'.repeat(1000));
      await ago(path.join(root, 'certificates', 'crashed.example.com.json~tmp~9-dead'), 2 * HOUR);
      await storage.store(keys.failure('gone.example.com'), failureAt(clock.now() - DAY));
      await storage.store(keys.http01('stale-token'), 'key-authorization');

      const daily: Array<{ files: number; bytes: number }> = [];
      for (let day = 0; day < DAYS; day++) {
        for (let i = 0; i < PER_DAY; i++) {
          const name = `d${day}-${i}.example.com`;
          allowed.add(name);
          await engine.getCertificate(name); // admitted and issued …
          allowed.delete(name); // … and from now on no longer allowed: denied at renewal, evicted
        }
        for (let hour = 0; hour < 24; hour++) {
          clock.advance(HOUR);
          await engine._maintenanceSettled();
          await new Promise((r) => setImmediate(r));
        }
        daily.push(await footprint(root));
      }
      await new Promise((r) => setTimeout(r, 50));
      await engine.stop();

      assert.ok(await storage.load(keys.certificate('managed.example.com')), 'the managed certificate, expired 35 days ago, is still there');
      // At most the issuance floor's count of its orders (a record with no failure in it): nothing that keeps a name.
      const record = await storage.load(keys.failure('managed.example.com'));
      assert.ok(record === undefined || JSON.parse(record).lastError === undefined, `with no failure recorded to keep it: ${record}`);
      // Names of day 22 expired on day 27, 13 days before the end: kept. Day 19's expired 16 days before: gone.
      assert.ok(await storage.load(keys.certificate(`d${DAYS - 18}-0.example.com`)), 'expired 13 days ago: within the grace period');
      assert.equal(await storage.load(keys.certificate(`d${DAYS - 21}-0.example.com`)), undefined, 'expired 16 days ago: removed');
      assert.equal(await storage.load(keys.failure('gone.example.com')), undefined);
      assert.equal(await storage.load(keys.http01('stale-token')), undefined);
      assert.ok(!(await readdir(path.join(root, 'certificates'))).some((f) => f.includes('~tmp~')), 'crash debris swept');
      assert.ok(runs().length >= DAYS - 1, `the cleaner ran daily (${runs().length} runs)`);

      // Flat: after names first expire past their grace period (day 5 + 14 + a run), no growth.
      const plateau = daily.slice(22);
      const early = daily.slice(22, 30);
      const late = daily.slice(30);
      const max = (xs: typeof daily, k: 'files' | 'bytes') => Math.max(...xs.map((x) => x[k]));
      const perName = max(daily, 'bytes') / Math.max(1, max(daily, 'files'));
      assert.ok(max(late, 'files') <= max(early, 'files') + PER_DAY, `files keep growing: ${plateau.map((d) => d.files).join(', ')}`);
      assert.ok(max(late, 'bytes') <= max(early, 'bytes') + PER_DAY * 4 * perName, `bytes keep growing: ${plateau.map((d) => d.bytes).join(', ')}`);
      // What a store that kept everything would hold by now: every name ever admitted.
      const everAdmitted = PER_DAY * DAYS;
      assert.ok(daily.at(-1)!.files < everAdmitted, `${daily.at(-1)!.files} files for ${everAdmitted} names ever admitted`);
    } finally {
      await engine?.stop();
      await rm(root, { recursive: true, force: true });
    }
  });
});

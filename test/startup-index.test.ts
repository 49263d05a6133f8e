/**
 * The start-up index (file storage): a restart puts names to sleep from one
 * index file, not a read per certificate; files changed, removed or added
 * since the index are found (the changed earlier-expiring certificate wakes
 * its name on time); a corrupt or hostile index is ignored with one warning
 * (every certificate read instead); processes sharing the directory write it
 * without a lock; `startupIndex: false` turns it off.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { ConfigError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { CertEngineOptions } from '../src/engine/options.js';
import type { StartupIndexStorage, Storage } from '../src/types.js';
import { captureLogs } from './helpers/log-capture.js';
import { scriptedIssuer, seededStorage } from './helpers/scripted-issuer.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const T0 = Math.floor(Date.now() / 1000) * 1000;
const DAY = 86_400_000;
const N = 60;
const LIVE = 5;
const names = Array.from({ length: N }, (_, i) => `ix${i}.localhost`);

/** File storage with every certificate read counted: by `load`, by the bulk read, by a versioned read. */
function spy(inner: Storage) {
  const counts = { loads: 0, bulk: 0, versioned: 0, indexReads: 0, versionedKeys: [] as string[] };
  const index = inner.startupIndex!;
  const storage: Storage = Object.assign(
    interceptStorage(inner, {
      description: inner.description,
      load: (key, next) => {
        if (key.startsWith('certificates/')) counts.loads++;
        return next(key);
      },
    }),
    {
      async *entries(prefix: string, options?: Parameters<NonNullable<Storage['entries']>>[1]) {
        for await (const batch of inner.entries!(prefix, options)) {
          counts.bulk += batch.length;
          yield batch;
        }
      },
      startupIndex: {
        read: (maxBytes: number) => {
          counts.indexReads++;
          return index.read(maxBytes);
        },
        write: (lines) => index.write(lines),
        versions: (prefix) => index.versions(prefix),
        loadVersioned: (key) => {
          counts.versioned++;
          counts.versionedKeys.push(key);
          return index.loadVersioned(key);
        },
      } satisfies StartupIndexStorage,
    },
  );
  return { storage, counts };
}

const indexFile = (root: string) => path.join(root, '~index', 'startup');

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const exists = (file: string) => stat(file).then(() => true, () => false);
/** The index file's mtime, to see it written again. */
const writtenAt = (file: string) => stat(file).then((s) => s.mtimeMs, () => 0);

function engineOn(storage: Storage, clock: ManualClock, extra: Partial<CertEngineOptions> = {}, issuer = scriptedIssuer({ mode: { kind: 'succeed' } })): CertEngine {
  return createCertEngine({ storage, issuers: [issuer], names, clock, maxLiveActors: LIVE, sessionTickets: false, storageCleaner: false, ...extra });
}

/** A cold start (no index) that writes the index, then stops. */
async function writeIndex(root: string, clock: ManualClock): Promise<void> {
  const engine = engineOn(fileStorage(root), clock);
  await engine.start();
  await until('the index written', () => exists(indexFile(root)));
  await engine.stop();
}

let seeded: string;
before(async () => {
  seeded = await mkdtemp(path.join(tmpdir(), 'certstate-index-seed-'));
  await seededStorage(names, new ManualClock(T0), fileStorage(seeded));
});
after(() => rm(seeded, { recursive: true, force: true }));

/** A fresh copy of the seeded storage directory. */
async function freshRoot(): Promise<string> {
  const root = await mkdtemp(path.join(tmpdir(), 'certstate-index-'));
  const { cp } = await import('node:fs/promises');
  await cp(seeded, root, { recursive: true });
  return root;
}

/** Run `body` on a fresh copy of the seeded storage root, removed afterwards whatever happens. */
async function withFreshRoot(body: (root: string) => Promise<void>): Promise<void> {
  const root = await freshRoot();
  try {
    await body(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

describe('start-up index', () => {
  it('a restart sleeps names from the index: no read per certificate for unchanged names (only the live ones and the index)', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      const { storage, counts } = spy(fileStorage(root));
      const engine = engineOn(storage, clock);
      await engine.start();
      try {
        assert.equal(counts.indexReads, 1, 'the index read once');
        // The live names (room under maxLiveActors) read their certificates; every other name comes from the index.
        assert.ok(counts.bulk + counts.loads + counts.versioned <= 2 * LIVE, `certificate reads at start: ${JSON.stringify(counts)}`);
        assert.equal(engine.statusSummary({ expiry: false }).byState.valid, N);
        assert.ok(engine.stats.sleeping >= N - LIVE - 1, 'names beyond maxLiveActors sleep');
        // The check after start-up finds nothing changed: no certificate read for a sleeping name.
        const before = counts.versioned;
        const t = await writtenAt(indexFile(root));
        await until('the index written again', async () => (await writtenAt(indexFile(root))) > t);
        assert.ok(counts.versioned - before <= LIVE, `reads by the check and the write: ${counts.versioned - before}`);
        // A sleeping name is still served from its real certificate, parsed first.
        const served = await engine.getCertificate(names[N - 1]!);
        assert.equal(served.meta.names[0], names[N - 1]);
      } finally {
        await engine.stop();
      }
    }));

  it('files changed, removed and added since the index: an earlier-expiring certificate wakes its name on time, a removed one is obtained, a new name is read', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      const file = fileStorage(root);
      // While no process runs: an operator puts a 3-day certificate in place of a sleeping name's 90-day one…
      const changed = names[N - 2]!;
      const other = memoryStorage();
      const short = createCertEngine({ storage: other, issuers: [scriptedIssuer({ mode: { kind: 'succeed' }, validityMs: 3 * DAY })], names: [changed], clock, sessionTickets: false, storageCleaner: false });
      await short.start();
      const shortCert = await short.getCertificate(changed);
      await short.stop();
      await file.store(keys.certificate(changed), (await other.load(keys.certificate(changed)))!);
      // …removes another's certificate, and a name with a stored certificate is managed that the index never saw.
      const removed = names[N - 3]!;
      await file.delete(keys.certificate(removed));
      const added = 'added.localhost';
      await seededStorage([added], clock, file);

      const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
      const { storage, counts } = spy(file);
      const engine = engineOn(storage, clock, { names: [...names, added] }, issuer);
      await engine.start();
      try {
        assert.equal(counts.indexReads, 1);
        await until('the changed certificate found', () => engine.statusOf(changed)?.certificate?.fingerprint === shortCert.meta.fingerprint);
        await until('the removed certificate obtained again', () => issuer.calls >= 1 && engine.statusOf(removed)?.state === 'valid');
        assert.equal(engine.statusOf(changed)?.certificate?.notAfter, shortCert.meta.notAfter);
        assert.equal(engine.statusOf(added)?.state, 'valid', 'the added name read');
        const callsBefore = issuer.calls;
        const renewAt = engine.statusOf(changed)!.renewAt!;
        // The 3-day certificate renews at half its life, not when the index's 90-day one would.
        assert.ok(renewAt < T0 + 2 * DAY, `renews at ${new Date(renewAt).toISOString()}`);
        clock.advanceTo(renewAt + 1000);
        await until('the changed name renewed', () => issuer.calls > callsBefore);
        assert.equal(issuer.requests.at(-1)?.names[0], changed);
      } finally {
        await engine.stop();
      }
      // The next index holds only managed names: a name no longer managed is not written again.
      const fewer = engineOn(fileStorage(root), clock, { names: names.slice(0, N - 10) });
      const t = await writtenAt(indexFile(root));
      await fewer.start();
      await until('the index rewritten', async () => (await writtenAt(indexFile(root))) > t);
      await fewer.stop();
      const lines = (await readFile(indexFile(root), 'utf8')).trim().split('\n');
      assert.ok(!lines.some((l) => l.includes(`"${names[N - 1]}"`)), 'a name no longer managed is dropped');
      assert.ok(lines.some((l) => l.includes(`"${names[N - 11]}"`)), 'a managed name is kept');
    }));

  it('a restore from backup (every file changed, content the same): the check reads each file with its stored metadata, parses no certificate and wakes no name; the next start reads none', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      // Every file's ctime moves (chmod to the mode it has): every index line is stale, no certificate changed.
      const { chmod, readdir } = await import('node:fs/promises');
      const touchAll = async (dir: string): Promise<number> => {
        let n = 0;
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          const p = path.join(dir, entry.name);
          if (entry.isDirectory()) n += await touchAll(p);
          else if (entry.isFile()) (await chmod(p, 0o600), n++);
        }
        return n;
      };
      assert.ok((await touchAll(path.join(root, 'certificates'))) >= N);
      const { storage, counts } = spy(fileStorage(root));
      const engine = engineOn(storage, clock);
      const t = await writtenAt(indexFile(root));
      await engine.start();
      try {
        await until('the index written again', async () => (await writtenAt(indexFile(root))) > t);
        // The names slept from the index: all but the first 2 × LIVE (LIVE got actors while there was room, LIVE more were read in bulk).
        assert.ok(counts.versioned >= N - 2 * LIVE, `every name slept from the index re-read: ${counts.versioned}`);
        assert.ok(engine.stats.sleeping >= N - LIVE - 1, `names sleep on (${engine.stats.sleeping})`);
        assert.equal(engine.statusSummary({ expiry: false }).byState.valid, N);
        // Read with the stored metadata, as the start-up's bulk read takes it: no certificate parsed, so no key material kept.
        assert.ok(engine.stats.cachedCertificates <= 2 * LIVE, `key material cached by the check: ${engine.stats.cachedCertificates}`);
        const served = await engine.getCertificate(names[N - 1]!);
        assert.equal(served.meta.names[0], names[N - 1], 'a sleeping name is served from its certificate, parsed first');
      } finally {
        await engine.stop();
      }
      // The index written after the check knows every file at its new version: the next start's check reads none.
      const again = spy(fileStorage(root));
      const next = engineOn(again.storage, clock);
      const t2 = await writtenAt(indexFile(root));
      await next.start();
      try {
        await until('the index written again', async () => (await writtenAt(indexFile(root))) > t2);
        assert.ok(again.counts.versioned <= LIVE, `reads by the check and the write after a restart: ${again.counts.versioned}`);
      } finally {
        await next.stop();
      }
    }));

  it('a file rewritten in place with its size, inode and mtime kept (cp -p, touch -d) is still found changed (its ctime) and read', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      const name = names[N - 5]!;
      // The file a read reads: the newest fenced version (certificates are stored fenced), else the plain file.
      const { readdir } = await import('node:fs/promises');
      const plain = path.join(root, ...keys.certificate(name).split('/'));
      const versions = await readdir(`${plain}~v`).catch(() => [] as string[]);
      const file = versions.length > 0 ? path.join(`${plain}~v`, versions.sort((a, b) => Number(b) - Number(a))[0]!) : plain;
      const before = await stat(file, { bigint: true });
      const text = await readFile(file, 'utf8');
      // Same length, other bytes, the same certificate: the unit's first key moved to the end.
      const { version, ...rest } = JSON.parse(text) as Record<string, unknown>;
      const changed = JSON.stringify({ ...rest, version });
      assert.notEqual(changed, text);
      assert.equal(changed.length, text.length);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await writeFile(file, changed); // in place: same inode
      const { execFileSync } = await import('node:child_process');
      const ns = before.mtimeNs;
      execFileSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, file]);
      const after = await stat(file, { bigint: true });
      assert.equal(after.ino, before.ino);
      assert.equal(after.size, before.size);
      assert.equal(after.mtimeNs, before.mtimeNs, 'mtime restored exactly');
      assert.notEqual(after.ctimeNs, before.ctimeNs);
      const { storage, counts } = spy(fileStorage(root));
      const engine = engineOn(storage, clock);
      await engine.start();
      try {
        await until('the rewritten file read by the check', () => counts.versionedKeys.includes(keys.certificate(name)));
      } finally {
        await engine.stop();
      }
    }));

  describe('a corrupt or hostile index is ignored with one warning, and every certificate is read', () => {
    const validLines = async (root: string) => (await readFile(indexFile(root), 'utf8')).trimEnd().split('\n');
    const cases: Array<[string, (root: string) => Promise<void>]> = [
      ['not JSON', (root) => writeFile(indexFile(root), '{"format":"certstate-startup-index"\n')],
      ['another format version', async (root) => {
        const lines = await validLines(root);
        lines[0] = JSON.stringify({ format: 'certstate-startup-index', v: 99 });
        await writeFile(indexFile(root), `${lines.join('\n')}\n`);
      }],
      ['truncated (its end missing)', async (root) => writeFile(indexFile(root), `${(await validLines(root)).slice(0, -10).join('\n')}\n`)],
      ['truncated mid-line', async (root) => {
        const text = await readFile(indexFile(root), 'utf8');
        await writeFile(indexFile(root), text.slice(0, Math.floor(text.length / 2)));
      }],
      ['oversized', async (root) => writeFile(indexFile(root), Buffer.alloc(N * 4096 + (1 << 20) + 10, 0x20))],
      ['a name that is not a name', async (root) => {
        const lines = await validLines(root);
        const entry = JSON.parse(lines[3]!);
        entry[0] = '../../../etc/passwd';
        lines[3] = JSON.stringify(entry);
        await writeFile(indexFile(root), `${lines.join('\n')}\n`);
      }],
      ['a name twice', async (root) => {
        const lines = await validLines(root);
        lines.splice(3, 0, lines[4]!);
        const end = JSON.parse(lines.at(-1)!);
        lines[lines.length - 1] = JSON.stringify({ end: end.end + 1 });
        await writeFile(indexFile(root), `${lines.join('\n')}\n`);
      }],
      ['metadata off the schema (far expiry, an extra field)', async (root) => {
        const lines = await validLines(root);
        const entry = JSON.parse(lines[20]!);
        entry[3] = { ...entry[3], notAfter: T0 + 3650 * DAY, trusted: true };
        lines[20] = JSON.stringify(entry);
        await writeFile(indexFile(root), `${lines.join('\n')}\n`);
      }],
      ['not valid UTF-8', async (root) => {
        const text = await readFile(indexFile(root));
        text[text.length - 40] = 0xff;
        await writeFile(indexFile(root), text);
      }],
      ['a symbolic link', async (root) => {
        await writeFile(path.join(root, 'elsewhere'), await readFile(indexFile(root)));
        await unlink(indexFile(root));
        await symlink(path.join(root, 'elsewhere'), indexFile(root));
      }],
    ];
    let root: string;
    before(async () => {
      root = await freshRoot();
      await writeIndex(root, new ManualClock(T0));
    });
    after(() => rm(root, { recursive: true, force: true }));

    for (const [what, spoil] of cases) {
      it(what, async () => {
        const copy = await mkdtemp(path.join(tmpdir(), 'certstate-index-bad-'));
        try {
          const { cp } = await import('node:fs/promises');
          await cp(root, copy, { recursive: true, verbatimSymlinks: true });
          await spoil(copy);
          const logs = captureLogs('warn');
          const { storage, counts } = spy(fileStorage(copy));
          const engine = engineOn(storage, new ManualClock(T0), { logger: logs.logger });
          await engine.start();
          try {
            const warnings = logs.lines().filter((l) => l.includes('start-up index ignored'));
            assert.equal(warnings.length, 1, logs.text());
            assert.equal(counts.bulk, N, 'every certificate read in bulk instead');
            assert.equal(engine.statusSummary({ expiry: false }).byState.valid, N);
          } finally {
            await engine.stop();
          }
          // Nothing outside the root was touched, and the next write replaces the bad index.
          if (what === 'a symbolic link') assert.ok((await readFile(path.join(copy, 'elsewhere'))).length > 0);
        } finally {
          await rm(copy, { recursive: true, force: true });
        }
      });
    }
  });

  it('processes sharing the directory: each writes the index without a lock, and a restart uses whichever is there', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      const a = engineOn(fileStorage(root), clock);
      const b = engineOn(fileStorage(root), clock);
      await Promise.all([a.start(), b.start()]);
      await until('the index written', () => exists(indexFile(root)));
      // Both write again (each its own view), concurrently.
      await Promise.all([a.stop(), b.stop()]);
      const logs = captureLogs('warn');
      const { storage, counts } = spy(fileStorage(root));
      const c = engineOn(storage, clock, { logger: logs.logger });
      await c.start();
      try {
        assert.ok(!logs.text().includes('start-up index ignored'), logs.text());
        assert.ok(counts.bulk <= LIVE, `the index used: ${JSON.stringify(counts)}`);
        assert.equal(c.statusSummary({ expiry: false }).byState.valid, N);
      } finally {
        await c.stop();
      }
    }));

  it('a start while another process is writing the index reads the previous one whole (written by rename, no lock)', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      const previous = (await readFile(indexFile(root), 'utf8')).trimEnd().split('\n');
      // Another process's write, stopped half way through its lines.
      let resume!: () => void;
      const paused = new Promise<void>((resolve) => (resume = resolve));
      let halfWritten!: () => void;
      const half = new Promise<void>((resolve) => (halfWritten = resolve));
      const writing = fileStorage(root).startupIndex!.write(
        (async function* () {
          yield previous.slice(0, 20);
          halfWritten();
          await paused;
          yield previous.slice(20);
        })(),
      );
      await half;
      await new Promise((resolve) => setTimeout(resolve, 50));
      const logs = captureLogs('warn');
      const { storage, counts } = spy(fileStorage(root));
      const engine = engineOn(storage, clock, { logger: logs.logger });
      await engine.start();
      try {
        assert.ok(!logs.text().includes('start-up index ignored'), logs.text());
        assert.ok(counts.bulk <= LIVE, `the previous index used whole: ${JSON.stringify(counts)}`);
      } finally {
        resume();
        await writing;
        await engine.stop();
      }
    }));

  it('startupIndex: false — no index written, none read', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      const off = engineOn(fileStorage(root), clock, { startupIndex: false });
      await off.start();
      await new Promise((resolve) => setTimeout(resolve, 300));
      await off.stop();
      assert.equal(await exists(indexFile(root)), false, 'no index written');
      await writeIndex(root, clock);
      const { storage, counts } = spy(fileStorage(root));
      const engine = engineOn(storage, clock, { startupIndex: false });
      await engine.start();
      await engine.stop();
      assert.equal(counts.indexReads, 0, 'the index is not read');
      assert.equal(counts.bulk, N, 'every certificate read');
    }));

  it('is written again after writeIntervalMs when names changed (a renewal), not while nothing changed', () =>
    withFreshRoot(async (root) => {
      const clock = new ManualClock(T0);
      await writeIndex(root, clock);
      const engine = engineOn(fileStorage(root), clock, { startupIndex: { writeIntervalMs: 60_000 } });
      await engine.start();
      try {
        const t = await writtenAt(indexFile(root));
        await until('the first write', async () => (await writtenAt(indexFile(root))) > t);
        await new Promise((resolve) => setTimeout(resolve, 50));
        const first = await writtenAt(indexFile(root));
        clock.advance(61_000);
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.equal(await writtenAt(indexFile(root)), first, 'nothing changed: not written');
        const renewed = names[N - 4]!;
        const before = engine.statusOf(renewed)?.certificate?.fingerprint;
        await engine.forceRenew(renewed);
        assert.notEqual(engine.statusOf(renewed)?.certificate?.fingerprint, before);
        clock.advance(61_000);
        await until('written after the renewal', async () => (await writtenAt(indexFile(root))) > first);
        await until('the renewed certificate in it', async () => (await readFile(indexFile(root), 'utf8')).includes(engine.statusOf(renewed)!.certificate!.fingerprint));
      } finally {
        await engine.stop();
      }
    }));

  it('options: writeIntervalMs is checked', () => {
    const base = { issuers: [scriptedIssuer()], storage: memoryStorage() };
    assert.throws(() => createCertEngine({ ...base, startupIndex: { writeIntervalMs: 10 } }), ConfigError);
    assert.throws(() => createCertEngine({ ...base, startupIndex: { writeInterval: 60_000 } as never }), /writeIntervalMs/);
    assert.throws(() => createCertEngine({ ...base, startupIndex: true as never }), ConfigError);
    assert.doesNotThrow(() => createCertEngine({ ...base, startupIndex: false }));
    assert.doesNotThrow(() => createCertEngine({ ...base, startupIndex: { writeIntervalMs: 60_000 } }));
  });
});



/**
 * Storage backends: the shared conformance suite on memory and file storage,
 * then what only the file storage promises (permissions, symlinks, crashes,
 * several processes on one directory).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, lstat, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { assertValidKey, assertValidPrefix } from '../src/adapters/storage/key.js';
import { DEFAULT_DATA_DIR, fileStorage, memoryStorage } from '../src/adapters/storage/index.js';
import { CorruptStorageError, FencingError, InvalidKeyError, LockLostError, StorageError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import { INVALID_KEYS, runStorageConformance } from './helpers/storage-conformance.js';

/** Every test here is bounded: a broken lock must fail a test, not hang the run. */
const T = { timeout: 20_000 };

const FILE_MODULE = pathToFileURL(fileURLToPath(new URL('../src/adapters/storage/file.ts', import.meta.url))).href;

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'certstate-storage-'));
}

runStorageConformance('memory', async () => ({ storage: memoryStorage(), cleanup: async () => {} }));

runStorageConformance('file', async () => {
  const dir = await tempDir();
  const root = path.join(dir, 'data');
  const lockDir = (lockKey: string) => path.join(root, '~locks', ...`${lockKey}~`.split('/'));
  return {
    storage: fileStorage(root),
    cleanup: () => rm(dir, { recursive: true, force: true }),
    faults: {
      // The lock directory is gone (deleted by hand, restored from an older backup).
      loseLock: (lockKey) => rm(lockDir(lockKey), { recursive: true, force: true }),
      async setToken(lockKey, token) {
        const dirPath = lockDir(lockKey);
        const newest = String(Math.max(...(await readdir(dirPath)).filter((n) => /^\d+$/.test(n)).map(Number)));
        const record = JSON.parse(await readFile(path.join(dirPath, newest), 'utf8')) as Record<string, unknown>;
        await writeFile(path.join(dirPath, newest), JSON.stringify({ ...record, token }));
        // And a planted generation whose successor needs one more digit, which must not stall the protocol.
        await writeFile(path.join(dirPath, '999999999999999'), JSON.stringify({ ...record, token }));
      },
    },
  };
});

describe('storage keys', () => {
  it('accepts every key of the storage layout', () => {
    for (const key of [
      keys.certificate('example.com'),
      keys.certificate('*.example.com'),
      keys.failure('xn--bcher-kva.example'),
      keys.issueLock('a.b.c'),
      keys.account('0123abcdef'),
      keys.http01('Zk9_-abc'),
      keys.tlsAlpn01('example.com'),
    ]) {
      assertValidKey(key);
    }
  });

  it('rejects each invalid key with a reason, and never echoes raw control characters', () => {
    for (const [key, why] of INVALID_KEYS) {
      assert.throws(() => assertValidKey(key), InvalidKeyError, why);
    }
    assert.throws(() => assertValidKey('a\u0000b'), (error: Error) => !error.message.includes('\u0000'));
    assert.throws(() => assertValidKey(42), /not a string/);
    assert.throws(() => assertValidKey('a//b'), /empty segment/);
    assert.throws(() => assertValidKey('a/../b'), /"\.\." segment/);
  });

  it('accepts prefixes that are empty, end in a slash or a partial segment', () => {
    for (const prefix of ['', 'certificates/', 'certificates', 'certificates/exa', 'a/b/', '.', '..x']) {
      assertValidPrefix(prefix);
    }
    for (const prefix of ['/', '/a', 'a//', '../', 'a/./', 'a\\b', 'x'.repeat(1025)]) {
      assert.throws(() => assertValidPrefix(prefix), InvalidKeyError, prefix);
    }
  });
});

describe('memory storage', () => {
  it('is described as memory', () => {
    assert.equal(memoryStorage().description, 'memory');
  });

  it('measures leases with the injected clock', T, async () => {
    let now = 1_000_000;
    const storage = memoryStorage({ now: () => now });
    const first = await storage.lock('locks/x', 60_000);
    now += 59_999;
    await first.renew(); // lease now ends at 1_119_999
    now += 60_000;
    const second = await storage.lock('locks/x', 60_000);
    assert.ok(second.fencingToken > first.fencingToken);
    await assert.rejects(first.renew(), LockLostError);
    await storage.store('k', 'v');
    assert.equal((await storage.stat('k'))?.modified, now);
  });

  it('lets several engines in one process share one storage like a cluster', T, async () => {
    const shared = memoryStorage();
    const engineA = { storage: shared };
    const engineB = { storage: shared };
    const a = await engineA.storage.lock(keys.issueLock('example.com'), 10_000);
    await engineA.storage.store(keys.certificate('example.com'), 'from A', { fence: { lockKey: a.key, token: a.fencingToken } });
    const waiting = engineB.storage.lock(keys.issueLock('example.com'), 10_000);
    await a.release();
    const b = await waiting;
    assert.equal(await engineB.storage.load(keys.certificate('example.com')), 'from A');
    await assert.rejects(
      engineA.storage.store(keys.certificate('example.com'), 'late A', { fence: { lockKey: a.key, token: a.fencingToken } }),
      FencingError,
    );
    await b.release();
  });
});

describe('file storage', () => {
  let dir: string;
  let root: string;
  before(async () => {
    dir = await tempDir();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  /** A fresh root (not yet created) in the test's temp dir. */
  let counter = 0;
  const freshRoot = () => (root = path.join(dir, `root-${++counter}`, 'data'));

  it('is described by its absolute directory; the default directory is ./certstate-data', () => {
    assert.equal(DEFAULT_DATA_DIR, './certstate-data');
    assert.equal(fileStorage().description, `file:${path.resolve('certstate-data')}`);
    assert.equal(fileStorage('rel/dir').description, `file:${path.resolve('rel/dir')}`);
  });

  for (const umask of [0o000, 0o277]) {
    it(`creates every directory 0700 and every file 0600 under umask ${umask.toString(8).padStart(3, '0')}`, T, async () => {
      const storage = fileStorage(freshRoot());
      const saved = process.umask(umask);
      try {
        await storage.store(keys.certificate('example.com'), 'unit with a private key');
        await storage.store('a/b/c/d', 'deep');
        const lock = await storage.lock(keys.issueLock('example.com'), 10_000);
        await lock.renew();
        await lock.release();
      } finally {
        process.umask(saved);
      }
      const seen = { dirs: 0, files: 0 };
      const check = async (p: string): Promise<void> => {
        const stats = await lstat(p);
        const mode = stats.mode & 0o777;
        if (stats.isDirectory()) {
          seen.dirs++;
          assert.equal(mode, 0o700, `${p} has mode ${mode.toString(8)}`);
          for (const name of await readdir(p)) await check(path.join(p, name));
        } else {
          seen.files++;
          assert.equal(mode, 0o600, `${p} has mode ${mode.toString(8)}`);
        }
      };
      await check(path.dirname(root)); // includes the parent that fileStorage had to create
      // root-N, data, certificates, a, a/b, a/b/c, ~locks, ~locks/locks, ~locks/locks/issue, the lock's dir.
      assert.deepEqual(seen, { dirs: 10, files: 3 });
    });
  }

  it('rejects invalid keys before touching the disk', T, async () => {
    const storage = fileStorage(freshRoot());
    for (const [key] of INVALID_KEYS) {
      await assert.rejects(storage.store(key, 'x'), InvalidKeyError);
      await assert.rejects(storage.lock(key, 1_000), InvalidKeyError);
    }
    await assert.rejects(stat(root), { code: 'ENOENT' });
  });

  it('never reads or writes through a symlinked directory inside the root', T, async () => {
    const storage = fileStorage(freshRoot());
    const outside = path.join(path.dirname(root), 'outside');
    await storage.store('x', 'creates the root');
    await mkdir(outside);
    await writeFile(path.join(outside, 'victim.json'), 'precious');
    await symlink(outside, path.join(root, 'certificates'));
    await assert.rejects(storage.store('certificates/new.json', 'evil'), StorageError);
    await assert.rejects(storage.store('certificates/victim.json', 'evil'), StorageError);
    await assert.rejects(storage.delete('certificates/victim.json'), StorageError);
    await assert.rejects(storage.load('certificates/victim.json'), StorageError);
    await assert.rejects(storage.stat('certificates/victim.json'), StorageError);
    await assert.rejects(storage.list('certificates/'), StorageError);
    assert.deepEqual(await storage.list(''), ['x']);
    assert.deepEqual(await readdir(outside), ['victim.json']);
    assert.equal(await readFile(path.join(outside, 'victim.json'), 'utf8'), 'precious');
  });

  it('never writes through (or reads) a symlink planted at the key itself', T, async () => {
    const storage = fileStorage(freshRoot());
    const outside = path.join(path.dirname(root), 'outside.txt');
    await storage.store('certificates/other.json', 'creates the dir');
    await writeFile(outside, 'precious');
    const planted = path.join(root, 'certificates', 'example.com.json');
    await symlink(outside, planted);
    await assert.rejects(storage.store('certificates/example.com.json', 'evil'), StorageError);
    await assert.rejects(storage.load('certificates/example.com.json'), StorageError);
    await assert.rejects(storage.stat('certificates/example.com.json'), StorageError);
    assert.equal(await readFile(outside, 'utf8'), 'precious');
    assert.ok((await lstat(planted)).isSymbolicLink());
    assert.deepEqual(await storage.list('certificates/'), ['certificates/other.json']);
  });

  it('never follows a symlinked lock directory', T, async () => {
    const storage = fileStorage(freshRoot());
    const outside = path.join(path.dirname(root), 'outside');
    await storage.store('x', 'creates the root');
    await mkdir(outside);
    await symlink(outside, path.join(root, '~locks'));
    await assert.rejects(storage.lock('locks/issue/example.com', 1_000), StorageError);
    assert.deepEqual(await readdir(outside), []);
  });

  it('reports odd files at a key as StorageError instead of crashing or hanging', T, async () => {
    const storage = fileStorage(freshRoot());
    await storage.store('certificates/a/b', 'makes certificates/a a directory');
    await assert.rejects(storage.load('certificates/a'), StorageError);
    await assert.rejects(storage.stat('certificates/a'), StorageError);
    await assert.rejects(storage.store('certificates/a', 'x'), StorageError);
    await assert.rejects(storage.store('certificates/a/b/c', 'x'), StorageError); // b is a file
    assert.equal(await storage.load('certificates/a/b/c'), undefined);

    const fifo = path.join(root, 'certificates', 'fifo');
    const made = await new Promise<number | null>((resolve) => spawn('mkfifo', [fifo]).on('exit', resolve).on('error', () => resolve(null)));
    if (made === 0) await assert.rejects(storage.load('certificates/fifo'), StorageError);

    await writeFile(path.join(root, 'certificates', 'binary'), Buffer.from([0x7b, 0xff, 0xfe, 0x00]), { mode: 0o600 });
    await assert.rejects(storage.load('certificates/binary'), CorruptStorageError);

    // Truncation is for the layer above to detect: storage returns what is there.
    await writeFile(path.join(root, 'certificates', 'truncated.json'), '{"certificatePem":"-----BEG', { mode: 0o600 });
    assert.equal(await storage.load('certificates/truncated.json'), '{"certificatePem":"-----BEG');
  });

  it('reports an unreadable file as StorageError with the fs error as cause', { ...T, skip: process.getuid?.() === 0 && 'root reads any file' }, async () => {
    const storage = fileStorage(freshRoot());
    await storage.store('k', 'secret');
    const { chmod } = await import('node:fs/promises');
    await chmod(path.join(root, 'k'), 0o000);
    await assert.rejects(storage.load('k'), (error: unknown) => error instanceof StorageError && (error.cause as NodeJS.ErrnoException).code === 'EACCES');
  });

  it('a crash between temp write and rename leaves the previous value; the debris is never listed and later swept', T, async () => {
    const dataRoot = freshRoot();
    const storage = fileStorage(dataRoot);
    await storage.store('certificates/example.com.json', 'previous');
    const child = spawn(
      process.execPath,
      [
        '--import', 'tsx', '--input-type=module', '-e',
        `import { fileStorage } from ${JSON.stringify(FILE_MODULE)};
         const storage = fileStorage(process.env.ROOT, { testHooks: { beforeRename: () => process.kill(process.pid, 'SIGKILL') } });
         await storage.store('certificates/example.com.json', 'next');`,
      ],
      { env: { ...process.env, ROOT: dataRoot }, stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const [, signal] = (await new Promise((resolve) => child.on('exit', (...args) => resolve(args)))) as [number | null, string | null];
    assert.equal(signal, 'SIGKILL');

    const certDir = path.join(dataRoot, 'certificates');
    const debris = (await readdir(certDir)).filter((name) => name !== 'example.com.json');
    assert.equal(debris.length, 1, 'the crashed write left its temp file');
    assert.equal(await readFile(path.join(certDir, debris[0]), 'utf8'), 'next');
    assert.equal(await storage.load('certificates/example.com.json'), 'previous');
    assert.deepEqual(await storage.list(''), ['certificates/example.com.json']);

    // A fresh temp file may be a write in flight elsewhere: kept. An hour-old one is debris: swept.
    const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(path.join(certDir, debris[0]), old, old);
    const inFlight = 'other.json~tmp~1-abcdef';
    await writeFile(path.join(certDir, inFlight), 'in flight', { mode: 0o600 });
    await fileStorage(dataRoot).store('certificates/example.com.json', 'after restart');
    assert.deepEqual((await readdir(certDir)).sort(), ['example.com.json', inFlight].sort());
    assert.equal(await storage.load('certificates/example.com.json'), 'after restart');
  });

  it('two storages on one directory respect each other\'s locks and fences', T, async () => {
    const a = fileStorage(freshRoot(), { pollIntervalMs: 10 });
    const b = fileStorage(root, { pollIntervalMs: 10 });
    const key = keys.issueLock('example.com');
    const held = await a.lock(key, 10_000);
    let bGot = false;
    const bWaiting = b.lock(key, 10_000).then((lock) => ((bGot = true), lock));
    await sleep(200);
    assert.equal(bGot, false, 'b took a lock that a holds');
    await a.store('certificates/example.com.json', 'by a', { fence: { lockKey: key, token: held.fencingToken } });
    await held.release();
    const bLock = await bWaiting;
    assert.ok(bLock.fencingToken > held.fencingToken, 'the next holder has a greater token');
    await assert.rejects(
      a.store('certificates/example.com.json', 'late a', { fence: { lockKey: key, token: held.fencingToken } }),
      FencingError,
    );
    await a.store('certificates/example.com.json', 'b via a', { fence: { lockKey: key, token: bLock.fencingToken } });
    assert.equal(await b.load('certificates/example.com.json'), 'b via a');
    await bLock.release();
  });

  it('many storages racing for one expired lock: one winner at a time, every token distinct', T, async () => {
    const dataRoot = freshRoot();
    const stale = await fileStorage(dataRoot).lock('locks/x', 50); // never renewed nor released
    await sleep(80);
    const storages = Array.from({ length: 5 }, () => fileStorage(dataRoot, { pollIntervalMs: 5 }));
    let inside = 0;
    const tokens: number[] = [];
    await Promise.all(
      storages.flatMap((storage) =>
        [0, 1].map(async () => {
          const lock = await storage.lock('locks/x', 5_000);
          inside++;
          assert.equal(inside, 1, 'two holders at once');
          tokens.push(lock.fencingToken);
          await sleep(5);
          inside--;
          await lock.release();
        }),
      ),
    );
    assert.equal(tokens.length, 10);
    for (let i = 0; i < tokens.length; i++) assert.ok(tokens[i]! > (i === 0 ? stale.fencingToken : tokens[i - 1]!), `tokens grow: ${tokens}`);
    await assert.rejects(stale.renew(), LockLostError);
    // Only the newest generation is kept on disk (generations are numbered 1, 2, …; the token is in the record).
    const kept = await readdir(path.join(dataRoot, '~locks', 'locks', 'x~'));
    assert.deepEqual(kept, ['11']);
  });

  it('takes over a lock whose file is unreadable garbage once it is older than the ttl', T, async () => {
    const dataRoot = freshRoot();
    const storage = fileStorage(dataRoot);
    const first = await storage.lock('locks/x', 60_000);
    const file = path.join(dataRoot, '~locks', 'locks', `x~`, '1');
    await writeFile(file, '{"tok', { mode: 0o600 });
    const waiting = storage.lock('locks/x', 60_000, { signal: AbortSignal.timeout(150) });
    await assert.rejects(waiting, { name: 'TimeoutError' }); // fresh garbage: maybe a holder, wait
    const old = new Date(Date.now() - 120_000);
    await utimes(file, old, old);
    const second = await storage.lock('locks/x', 60_000);
    assert.ok(second.fencingToken > first.fencingToken);
    await second.release();
  });

  describe('with a lock held by another process', () => {
    let child: ChildProcess | undefined;
    after(() => {
      child?.kill('SIGKILL');
    });

    it('excludes this process until its lease runs out after the holder is killed', T, async () => {
      const dataRoot = freshRoot();
      const ttl = 1_500;
      child = spawn(
        process.execPath,
        [
          '--import', 'tsx', '--input-type=module', '-e',
          `import { fileStorage } from ${JSON.stringify(FILE_MODULE)};
           const before = Date.now(); // the lease ends no earlier than before + ttl
           const lock = await fileStorage(process.env.ROOT).lock('locks/issue/example.com', Number(process.env.TTL));
           console.log(JSON.stringify({ token: lock.fencingToken, before }));
           setInterval(() => {}, 1000); // hold without renewing until killed`,
        ],
        { env: { ...process.env, ROOT: dataRoot, TTL: String(ttl) }, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child!.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('\n')) resolve(out.split('\n')[0]);
        });
        child!.on('exit', (code) => reject(new Error(`child exited early (${code})`)));
      });
      const held = JSON.parse(line) as { token: number; before: number };

      const storage = fileStorage(dataRoot, { pollIntervalMs: 10 });
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 200);
      await assert.rejects(storage.lock('locks/issue/example.com', 10_000, { signal: controller.signal }), { name: 'AbortError' });
      await assert.rejects(
        storage.store('certificates/example.com.json', 'x', { fence: { lockKey: 'locks/issue/example.com', token: held.token + 1 } }),
        FencingError,
      );

      child.kill('SIGKILL');
      const lock = await storage.lock('locks/issue/example.com', 10_000);
      assert.ok(Date.now() >= held.before + ttl, 'taken before the killed holder\'s lease ran out');
      assert.ok(lock.fencingToken > held.token);
      await lock.release();
    });
  });

  describe('faults between processes (issue 16)', () => {
    const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
    const children = new Set<ChildProcess>();
    after(() => {
      for (const child of children) child.kill('SIGKILL');
    });

    /** Run `code` (an ES module using `fileStorage`) in a child; resolve each line it prints through `lines`. */
    function child(code: string, env: Record<string, string>) {
      const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `import { fileStorage } from ${JSON.stringify(FILE_MODULE)};\n${code}`], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.add(proc);
      proc.once('exit', () => children.delete(proc));
      const seen: string[] = [];
      const waiting = new Set<() => void>();
      let partial = '';
      proc.stdout!.on('data', (chunk: Buffer) => {
        partial += chunk.toString();
        const parts = partial.split('\n');
        partial = parts.pop()!;
        seen.push(...parts);
        for (const wake of [...waiting]) wake();
      });
      return {
        proc,
        /** The first line (already printed or future) matching `test`. */
        line(test: (line: string) => boolean, ms = 10_000): Promise<string> {
          return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`child printed no matching line within ${ms} ms (got ${JSON.stringify(seen)})`)), ms);
            const check = () => {
              const found = seen.find(test);
              if (found === undefined) return;
              clearTimeout(timer);
              waiting.delete(check);
              resolve(found);
            };
            waiting.add(check);
            check();
          });
        },
      };
    }

    it('a holder frozen between its fence check and its publish (SIGSTOP) cannot hide the newer holder\'s write', T, async () => {
      const dataRoot = freshRoot();
      const writer = child(
        `const storage = fileStorage(process.env.ROOT, { testHooks: { beforeRename: () => { console.log('frozen'); process.kill(process.pid, 'SIGSTOP'); } } });
         const lock = await storage.lock('locks/issue/example.com', 300);
         try {
           await storage.store('certificates/example.com.json', 'older', { fence: { lockKey: lock.key, token: lock.fencingToken } });
           console.log('stored');
         } catch (error) { console.log('refused ' + error.name); }`,
        { ROOT: dataRoot },
      );
      await writer.line((l) => l === 'frozen');
      // The frozen holder's lease runs out; the next holder writes.
      const storage = fileStorage(dataRoot, { pollIntervalMs: 10 });
      const lock = await storage.lock('locks/issue/example.com', 10_000);
      await storage.store('certificates/example.com.json', 'newer', { fence: { lockKey: lock.key, token: lock.fencingToken } });
      writer.proc.kill('SIGCONT');
      const outcome = await writer.line((l) => l === 'stored' || l.startsWith('refused'));
      assert.equal(outcome, 'refused FencingError');
      assert.equal(await storage.load('certificates/example.com.json'), 'newer', 'the stale write replaced the newer one');
      assert.equal(await fileStorage(dataRoot).load('certificates/example.com.json'), 'newer');
      await lock.release();
    });

    it('a contender whose clock runs 10 minutes ahead (libfaketime) does not take a live lock', { ...T, skip: !existsSync(LIBFAKETIME) && !process.env.CI && 'libfaketime not installed' }, async () => {
      const dataRoot = freshRoot();
      const storage = fileStorage(dataRoot);
      const held = await storage.lock('locks/issue/example.com', 2_000);
      const renewing = setInterval(() => void held.renew().catch(() => {}), 500);
      try {
        const contender = child(
          `const lock = await fileStorage(process.env.ROOT, { pollIntervalMs: 10 }).lock('locks/issue/example.com', 2000, { signal: AbortSignal.timeout(2500) }).catch((e) => e.name);
           console.log(typeof lock === 'string' ? 'gave up ' + lock : 'acquired');
           process.exit(0);`,
          { ROOT: dataRoot, LD_PRELOAD: LIBFAKETIME, FAKETIME: '+600s' },
        );
        assert.equal(await contender.line((l) => l === 'acquired' || l.startsWith('gave up')), 'gave up TimeoutError', 'the fast-clock process took a lock that was being renewed');
        await held.renew();
      } finally {
        clearInterval(renewing);
        await held.release();
      }
    });

    it('a dead holder whose clock ran 10 minutes ahead frees its lock after its lease, not 10 minutes later', { ...T, skip: !existsSync(LIBFAKETIME) && !process.env.CI && 'libfaketime not installed' }, async () => {
      const dataRoot = freshRoot();
      const holder = child(
        `const lock = await fileStorage(process.env.ROOT).lock('locks/issue/example.com', 1000);
         console.log('held ' + lock.fencingToken);
         setInterval(() => {}, 1000);`,
        { ROOT: dataRoot, LD_PRELOAD: LIBFAKETIME, FAKETIME: '+600s' },
      );
      const token = Number((await holder.line((l) => l.startsWith('held '))).slice(5));
      const killedAt = Date.now();
      holder.proc.kill('SIGKILL');
      const lock = await fileStorage(dataRoot, { pollIntervalMs: 10 }).lock('locks/issue/example.com', 1000, { signal: AbortSignal.timeout(8_000) });
      assert.ok(lock.fencingToken !== token, 'a new token');
      assert.ok(Date.now() - killedAt < 8_000);
      await lock.release();
    });
  });
});

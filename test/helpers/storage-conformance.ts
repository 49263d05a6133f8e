/**
 * The contract every `Storage` must meet, as node:test cases. It uses only
 * the `Storage` interface, so any backend (memory, file, Redis, PostgreSQL,
 * a third party's) can run it:
 *
 *   runStorageConformance('redis', async () => ({ storage, cleanup }));
 *
 * `makeStorage` is called once per test and must return an empty storage;
 * `cleanup` runs after the test, pass or fail.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FencingError, InvalidKeyError, LockLostError } from '../../src/errors.js';
import type { Storage, StorageLock } from '../../src/types.js';

/** A fresh, empty storage and how to dispose of it. */
export interface StorageFixture {
  storage: Storage;
  cleanup(): Promise<void>;
  /**
   * Faults only the backend itself can inject (absent: those tests skip).
   * `loseLock`: the lock's state and fencing counter are lost, as after a
   * restart without persistence, a restore, or a deleted key.
   * `setToken`: the lock's fencing counter is set to `token` (as a buggy or
   * hostile writer could).
   */
  faults?: {
    loseLock(lockKey: string): Promise<void>;
    setToken(lockKey: string, token: number): Promise<void>;
  };
}

const TEST_TIMEOUT = 15_000;

/** Resolve with the promise's value, or fail the test if it takes longer than `ms`. */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Track whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const tracked = promise.finally(() => {
    done = true;
  });
  tracked.catch(() => {}); // observed later by the test; avoid an unhandled rejection meanwhile
  return { promise: tracked, settled: () => done };
}

function fence(lock: StorageLock) {
  return { fence: { lockKey: lock.key, token: lock.fencingToken } };
}

/** Keys every backend must refuse, with why. */
export const INVALID_KEYS: ReadonlyArray<[string, string]> = [
  ['../x', 'parent traversal'],
  ['a/../b', 'inner parent segment'],
  ['a//b', 'empty segment'],
  ['/abs', 'leading slash'],
  ['a/', 'trailing slash'],
  ['a/./b', 'dot segment'],
  ['.', 'dot'],
  ['..', 'dot dot'],
  ['a\u0000b', 'NUL'],
  ['a\\b', 'backslash'],
  ['', 'empty'],
  ['a b', 'space'],
  ['caf\u00e9', 'non-ASCII'],
  ['a:b', 'colon'],
  ['*.example.com', 'asterisk'],
  ['x'.repeat(201), 'segment over 200 characters'],
  [Array.from({ length: 6 }, () => 'x'.repeat(200)).join('/'), 'key over 1024 characters'],
];

/** Register the storage conformance tests for one backend. */
export function runStorageConformance(label: string, makeStorage: () => Promise<StorageFixture>): void {
  /** Run `fn` on a fresh storage, always cleaning up. */
  const withStorage = (fn: (storage: Storage, faults: StorageFixture['faults']) => Promise<void>) => async () => {
    const { storage, cleanup, faults } = await makeStorage();
    try {
      await fn(storage, faults);
    } finally {
      await cleanup();
    }
  };
  const test = (name: string, fn: (storage: Storage, faults: StorageFixture['faults']) => Promise<void>) =>
    it(name, { timeout: TEST_TIMEOUT }, withStorage(fn));
  /** A test that needs the backend's fault hooks: it returns early (and says so) without them. */
  const faultTest = (name: string, fn: (storage: Storage, faults: NonNullable<StorageFixture['faults']>) => Promise<void>) =>
    test(name, async (s, faults) => {
      if (!faults) return void console.log(`# ${label}: "${name}" needs fault hooks this backend has not (a single-process store loses nothing)`);
      await fn(s, faults);
    });

  describe(`storage conformance: ${label}`, () => {
    describe('values', () => {
      test('load and stat of an absent key give undefined', async (s) => {
        assert.equal(await s.load('certificates/absent.json'), undefined);
        assert.equal(await s.stat('certificates/absent.json'), undefined);
      });

      test('store then load returns the value; stat gives its UTF-8 size and a recent time', async (s) => {
        await s.store('certificates/example.com.json', '{"a":"é"}');
        assert.equal(await s.load('certificates/example.com.json'), '{"a":"é"}');
        const stat = await s.stat('certificates/example.com.json');
        assert.ok(stat);
        assert.equal(stat.size, 10);
        assert.ok(Math.abs(stat.modified - Date.now()) < 5 * 60_000, `modified ${stat.modified} is not recent`);
      });

      test('an empty string is a value, not absence', async (s) => {
        await s.store('failures/empty', '');
        assert.equal(await s.load('failures/empty'), '');
        assert.equal((await s.stat('failures/empty'))?.size, 0);
        assert.deepEqual(await s.list('failures/'), ['failures/empty']);
      });

      test('entries (a bulk read, optional) gives every key under the prefix with the value load gives, in bounded batches; nothing deleted, nothing else', async (s) => {
        if (typeof s.entries !== 'function') return void console.log(`# ${label}: no bulk read (entries): the engine reads name by name`);
        const n = 600;
        for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => s.store(`certificates/n${i + j}.json`, `value ${i + j} é`)));
        await s.store('certificates-other/x.json', 'not under the prefix');
        await s.store('failures/n1', 'another prefix');
        // A fenced write (file storage keeps it as a version) and a fenced delete (a tombstone).
        const lock = await s.lock('locks/issue/bulk', 10_000);
        await s.store('certificates/fenced.json', 'fenced value', { fence: { lockKey: lock.key, token: lock.fencingToken } });
        await s.store('certificates/gone.json', 'deleted below');
        await s.delete('certificates/gone.json', { fence: { lockKey: lock.key, token: lock.fencingToken } });
        await s.store('certificates/gone2.json', 'deleted below');
        await s.delete('certificates/gone2.json');
        await lock.release();
        const seen = new Map<string, string>();
        let largest = 0;
        for await (const batch of s.entries('certificates/')) {
          largest = Math.max(largest, batch.length);
          for (const [key, value] of batch) {
            assert.ok(!seen.has(key), `${key} listed twice`);
            seen.set(key, value);
          }
        }
        assert.equal(seen.size, n + 1);
        assert.equal(seen.get('certificates/fenced.json'), 'fenced value');
        for (let i = 0; i < n; i++) assert.equal(seen.get(`certificates/n${i}.json`), `value ${i} é`);
        assert.ok(largest <= 1000, `bounded batches (the largest held ${largest})`);
        // Stopping early is fine.
        for await (const batch of s.entries('certificates/')) {
          assert.ok(batch.length > 0);
          break;
        }
        for await (const batch of s.entries('nothing-here/')) assert.fail(`nothing to list, got ${batch.length}`);
      });

      test('store overwrites', async (s) => {
        await s.store('k', 'first value, longer');
        await s.store('k', 'second');
        assert.equal(await s.load('k'), 'second');
        assert.equal((await s.stat('k'))?.size, 6);
      });

      test('delete removes the value; deleting an absent key is fine', async (s) => {
        await s.store('challenges/http-01/tok', 'auth');
        await s.delete('challenges/http-01/tok');
        assert.equal(await s.load('challenges/http-01/tok'), undefined);
        assert.equal(await s.stat('challenges/http-01/tok'), undefined);
        assert.deepEqual(await s.list('challenges/'), []);
        await s.delete('challenges/http-01/tok');
        await s.delete('never/stored');
      });

      test('list returns exactly the keys under a prefix, not siblings', async (s) => {
        const stored = [
          'certificates/a.example.json',
          'certificates/b.example.json',
          'certificates/_wildcard_.example.com.json',
          'certificates2/c.example.json',
          'certificatesX',
          'failures/a.example.json',
          'deep/er/still/key',
        ];
        for (const key of stored) await s.store(key, key);
        const sorted = async (prefix: string) => (await s.list(prefix)).sort();
        assert.deepEqual(await sorted('certificates/'), [
          'certificates/_wildcard_.example.com.json',
          'certificates/a.example.json',
          'certificates/b.example.json',
        ]);
        assert.deepEqual(await sorted('certificates'), [
          'certificates/_wildcard_.example.com.json',
          'certificates/a.example.json',
          'certificates/b.example.json',
          'certificates2/c.example.json',
          'certificatesX',
        ]);
        assert.deepEqual(await sorted('certificates/a'), ['certificates/a.example.json']);
        assert.deepEqual(await sorted('deep/'), ['deep/er/still/key']);
        assert.deepEqual(await sorted('deep/er/still/key'), ['deep/er/still/key']);
        assert.deepEqual(await sorted('nothing/'), []);
        assert.deepEqual(await sorted(''), [...stored].sort());
      });

      test('list does not show locks', async (s) => {
        const lock = await s.lock('locks/issue/example.com', 5_000);
        await s.store('certificates/x.json', 'x');
        assert.deepEqual(await s.list(''), ['certificates/x.json']);
        await lock.release();
      });

      test('large values (1.5 MB) round-trip', async (s) => {
        const value = '0123456789abcdef'.repeat(96 * 1024) + 'é';
        await s.store('certificates/large.json', value);
        assert.equal(await s.load('certificates/large.json'), value);
        assert.equal((await s.stat('certificates/large.json'))?.size, 96 * 1024 * 16 + 2);
      });

      test('unicode values round-trip exactly', async (s) => {
        const value = '\uFEFFGrüße, 世界 🔐 עברית e\u0301 \u{1F468}\u200D\u{1F469}\u200D\u{1F467} \r\n\ttab \u{10FFFF} end';
        await s.store('unicode', value);
        assert.equal(await s.load('unicode'), value);
        assert.equal((await s.stat('unicode'))?.size, Buffer.byteLength(value, 'utf8'));
      });

      test('50 concurrent writers to one key: one written value intact, readers never see a mix', async (s) => {
        const key = 'certificates/contended.json';
        const values = Array.from({ length: 50 }, (_, i) => `writer ${i} `.padEnd(64 * 1024, String.fromCharCode(65 + (i % 26))));
        const valid = new Set(values);
        let writing = true;
        const reads: string[] = [];
        const reader = (async () => {
          while (writing) {
            const value = await s.load(key);
            if (value !== undefined) reads.push(value);
          }
        })();
        try {
          await Promise.all(values.map((value) => s.store(key, value)));
        } finally {
          writing = false;
          await reader;
        }
        const final = await s.load(key);
        assert.ok(final !== undefined && valid.has(final), 'final value is not one of the written values');
        assert.ok(reads.every((value) => valid.has(value)), 'a reader saw a value nobody wrote');
      });
    });

    describe('keys', () => {
      test('invalid keys are rejected with InvalidKeyError by every operation, and nothing is written', async (s) => {
        for (const [key, why] of INVALID_KEYS) {
          const label = `${why} (${JSON.stringify(key.slice(0, 20))})`;
          await assert.rejects(s.load(key), InvalidKeyError, `load: ${label}`);
          await assert.rejects(s.store(key, 'x'), InvalidKeyError, `store: ${label}`);
          await assert.rejects(s.delete(key), InvalidKeyError, `delete: ${label}`);
          await assert.rejects(s.stat(key), InvalidKeyError, `stat: ${label}`);
          await assert.rejects(s.lock(key, 1_000), InvalidKeyError, `lock: ${label}`);
          await assert.rejects(
            s.store('valid', 'x', { fence: { lockKey: key, token: 1 } }),
            InvalidKeyError,
            `fence lock key: ${label}`,
          );
        }
        assert.deepEqual(await s.list(''), []);
      });

      test('invalid list prefixes are rejected with InvalidKeyError', async (s) => {
        for (const prefix of ['/', '/a', '../', 'a//', 'a/../', './', 'a\\', 'a\u0000', 'é']) {
          await assert.rejects(s.list(prefix), InvalidKeyError, `prefix ${JSON.stringify(prefix)}`);
        }
      });

      test('keys at the limits are accepted', async (s) => {
        const longest = Array.from({ length: 5 }, (_, i) => String(i).repeat(200)).join('/') + '/' + 'z'.repeat(19);
        assert.equal(longest.length, 1024);
        const keys = ['a', 'A-Z_a.z-0.9', '..x', 'x..', '.hidden', 'x'.repeat(200), longest];
        for (const key of keys) await s.store(key, `v:${key}`);
        for (const key of keys) assert.equal(await s.load(key), `v:${key}`, key);
        assert.deepEqual((await s.list('')).sort(), [...keys].sort());
      });
    });

    describe('locks', () => {
      test('a lock is exclusive: a second lock() waits until release', async (s) => {
        const first = await s.lock('locks/issue/example.com', 10_000);
        assert.equal(first.key, 'locks/issue/example.com');
        const second = track(s.lock('locks/issue/example.com', 10_000));
        await sleep(250);
        assert.equal(second.settled(), false, 'second lock() did not wait');
        await first.release();
        const got = await within(2_000, second.promise, 'second lock() after release');
        assert.ok(got.fencingToken > first.fencingToken);
        await got.release();
      });

      test('locks on different keys do not block each other', async (s) => {
        const a = await s.lock('locks/issue/a.example', 10_000);
        const b = await within(1_000, s.lock('locks/issue/b.example', 10_000), 'lock on another key');
        await Promise.all([a.release(), b.release()]);
      });

      test('concurrent contenders hold the lock one at a time, with increasing tokens', async (s) => {
        let inside = 0;
        const tokens: number[] = [];
        await Promise.all(
          Array.from({ length: 6 }, async () => {
            for (let round = 0; round < 3; round++) {
              const lock = await s.lock('locks/account/acc', 10_000);
              inside++;
              assert.equal(inside, 1, 'two holders at once');
              tokens.push(lock.fencingToken);
              await sleep(2);
              inside--;
              await lock.release();
            }
          }),
        );
        assert.equal(tokens.length, 18);
        for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `tokens not increasing: ${tokens}`);
      });

      test('a holder that does not renew is superseded after the ttl, by a holder with a higher token', async (s) => {
        const first = await s.lock('locks/issue/example.com', 200);
        const start = Date.now();
        const second = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after expiry');
        assert.ok(Date.now() - start >= 150, `taken over after ${Date.now() - start} ms, before the 200 ms lease ran out`);
        assert.ok(second.fencingToken > first.fencingToken);
        await second.release();
      });

      test('renew keeps the lease past its ttl', async (s) => {
        // Renewed every fifth of its ttl, for 1.4 ttls: margin for a loaded machine's stalls.
        const first = await s.lock('locks/issue/example.com', 1500);
        const second = track(s.lock('locks/issue/example.com', 10_000));
        for (let i = 0; i < 7; i++) {
          await sleep(300);
          await first.renew();
        }
        assert.equal(second.settled(), false, 'lock was taken while renewed');
        await first.release();
        const got = await within(2_000, second.promise, 'lock after release');
        assert.ok(got.fencingToken > first.fencingToken);
        await got.release();
      });

      test('renew after the lease was taken over rejects LockLostError; release then is silent', async (s) => {
        const first = await s.lock('locks/issue/example.com', 150);
        const second = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after expiry');
        await assert.rejects(first.renew(), LockLostError);
        await first.release();
        await second.renew(); // the new holder is untouched by the old one's release
        const third = track(s.lock('locks/issue/example.com', 10_000));
        await sleep(150);
        assert.equal(third.settled(), false, "the old holder's release freed the new holder's lock");
        await second.release();
        await (await within(2_000, third.promise, 'third lock')).release();
      });

      test('renew after the lease expired rejects LockLostError even if nobody took the lock', async (s) => {
        const lock = await s.lock('locks/issue/example.com', 120);
        await sleep(300);
        await assert.rejects(lock.renew(), LockLostError);
        await lock.release();
      });

      test('release is idempotent and frees the lock', async (s) => {
        const first = await s.lock('locks/issue/example.com', 10_000);
        await first.release();
        await first.release();
        await assert.rejects(first.renew(), LockLostError);
        const second = await within(1_000, s.lock('locks/issue/example.com', 10_000), 'lock after release');
        await second.release();
      });

      test('a write with a stale fencing token is refused and changes nothing; the current token writes', async (s) => {
        const key = 'certificates/example.com.json';
        const first = await s.lock('locks/issue/example.com', 150);
        await s.store(key, 'one', fence(first));
        const second = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after expiry');
        await assert.rejects(s.store(key, 'stale', fence(first)), FencingError);
        await assert.rejects(s.store('certificates/other.json', 'stale', fence(first)), FencingError);
        assert.equal(await s.load(key), 'one');
        assert.equal(await s.load('certificates/other.json'), undefined);
        await s.store(key, 'two', fence(second));
        assert.equal(await s.load(key), 'two');
        await second.release();
      });

      test('a fence with a token never handed out is refused', async (s) => {
        await assert.rejects(s.store('k', 'v', { fence: { lockKey: 'locks/never', token: 1 } }), FencingError);
        const lock = await s.lock('locks/once', 10_000);
        await assert.rejects(s.store('k', 'v', { fence: { lockKey: 'locks/once', token: lock.fencingToken + 1 } }), FencingError);
        assert.equal(await s.load('k'), undefined);
        await lock.release();
      });

      test('a released holder\'s token stays current until someone else takes the lock', async (s) => {
        const lock = await s.lock('locks/issue/example.com', 10_000);
        await lock.release();
        await s.store('k', 'after release', fence(lock));
        const next = await s.lock('locks/issue/example.com', 10_000);
        await assert.rejects(s.store('k', 'stale', fence(lock)), FencingError);
        assert.equal(await s.load('k'), 'after release');
        await next.release();
      });

      test('a fenced delete with a stale token is refused and deletes nothing; the current token deletes', async (s) => {
        const key = 'challenges/tls-alpn-01/example.com';
        const first = await s.lock('locks/issue/example.com', 150);
        await s.store(key, 'first', fence(first));
        const second = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after expiry');
        await s.store(key, 'second', fence(second));
        await assert.rejects(s.delete(key, fence(first)), FencingError);
        assert.equal(await s.load(key), 'second', "the stale holder's delete removed the new holder's record");
        assert.deepEqual(await s.list('challenges/'), [key]);
        await s.delete(key, fence(second));
        assert.equal(await s.load(key), undefined);
        assert.deepEqual(await s.list('challenges/'), []);
        await s.delete(key, fence(second)); // absent is fine
        await second.release();
      });

      test('a stale holder\'s write that comes after a newer holder\'s never replaces it (whatever the order of arrival)', async (s) => {
        const key = 'certificates/example.com.json';
        const stale = await s.lock('locks/issue/example.com', 120);
        const fresh = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after expiry');
        await s.store(key, 'newer', fence(fresh));
        await assert.rejects(s.store(key, 'older', fence(stale)), FencingError);
        assert.equal(await s.load(key), 'newer');
        // An unfenced write still replaces a fenced one (operators, imports).
        await s.store(key, 'imported');
        assert.equal(await s.load(key), 'imported');
        assert.deepEqual(await s.list('certificates/'), [key]);
        await fresh.release();
      });

      test('values written unfenced, then fenced, then deleted fenced, are gone from list() and load(); their neighbours stay listed', async (s) => {
        const gone = Array.from({ length: 8 }, (_, i) => `certificates/gone${i}.example.com.json`);
        const neighbour = 'certificates/kept.example.com.json';
        await s.store(neighbour, 'kept');
        const lock = await s.lock('locks/issue/gone.example.com', 10_000);
        for (const key of gone) {
          await s.store(key, 'imported'); // unfenced: an operator's import
          await s.store(key, 'renewed', fence(lock)); // fenced over the unfenced value
          await s.delete(key, fence(lock));
        }
        for (const key of gone) assert.equal(await s.load(key), undefined, key);
        assert.deepEqual((await s.list('certificates/')).sort(), [neighbour]);
        await s.store(gone[0]!, 'again', fence(lock));
        assert.deepEqual((await s.list('certificates/')).sort(), [gone[0], neighbour]);
        await lock.release();
      });

      test('now() (when offered) is the storage\'s clock: close to this process\'s, and it moves forward', async (s) => {
        if (!s.now) return;
        const first = await s.now();
        assert.ok(Number.isFinite(first) && Math.abs(first - Date.now()) < 60_000, `storage clock ${first} vs local ${Date.now()}`);
        await sleep(20);
        assert.ok((await s.now()) >= first + 10, 'the storage clock moves');
      });

      faultTest('after the lock\'s data is lost, a token from before the loss is refused and never handed out again', async (s, faults) => {
        const key = 'certificates/example.com.json';
        const before = await s.lock('locks/issue/example.com', 10_000);
        await s.store(key, 'before', fence(before));
        await faults.loseLock('locks/issue/example.com');
        // Lost: nobody holds a valid token now, not even the old holder.
        await assert.rejects(s.store(key, 'stale', fence(before)), FencingError);
        const after = await within(3_000, s.lock('locks/issue/example.com', 10_000), 'lock after the loss');
        assert.ok(after.fencingToken > before.fencingToken, `token after the loss ${after.fencingToken} is above ${before.fencingToken}`);
        await assert.rejects(s.store(key, 'stale', fence(before)), FencingError);
        await s.store(key, 'after', fence(after));
        assert.equal(await s.load(key), 'after');
        await after.release();
      });

      faultTest('a fencing counter at 2^53 neither repeats a token nor stops the lock', async (s, faults) => {
        const lockKey = 'locks/issue/example.com';
        const first = await s.lock(lockKey, 10_000);
        await first.release();
        const huge = Number.MAX_SAFE_INTEGER;
        await faults.setToken(lockKey, huge);
        const next = await within(3_000, s.lock(lockKey, 10_000), 'lock at 2^53');
        assert.ok(Number.isSafeInteger(next.fencingToken), `token ${next.fencingToken} is a safe integer`);
        assert.notEqual(next.fencingToken, first.fencingToken);
        assert.notEqual(next.fencingToken, huge);
        await assert.rejects(s.store('k', 'stale', { fence: { lockKey, token: huge } }), FencingError);
        await assert.rejects(s.store('k', 'stale', fence(first)), FencingError);
        await s.store('k', 'ok', fence(next));
        await next.release();
        const again = await within(3_000, s.lock(lockKey, 10_000), 'the lock after that');
        assert.ok(again.fencingToken > next.fencingToken);
        await again.release();
      });

      test('waiting for a lock is aborted by the signal; the wait leaves no trace', async (s) => {
        const held = await s.lock('locks/issue/example.com', 10_000);
        const controller = new AbortController();
        const waiting = s.lock('locks/issue/example.com', 10_000, { signal: controller.signal });
        setTimeout(() => controller.abort(), 100);
        await assert.rejects(within(2_000, waiting, 'aborted lock()'), { name: 'AbortError' });
        await held.renew(); // still held by its owner
        await held.release();
        const next = await within(1_000, s.lock('locks/issue/example.com', 10_000), 'lock after aborted wait');
        await next.release();
      });

      test('an already aborted signal rejects at once', async (s) => {
        const signal = AbortSignal.abort();
        await assert.rejects(within(1_000, s.lock('locks/issue/example.com', 10_000, { signal }), 'lock()'), {
          name: 'AbortError',
        });
        const lock = await within(1_000, s.lock('locks/issue/example.com', 10_000), 'lock after refused wait');
        await lock.release();
      });
    });
  });
}

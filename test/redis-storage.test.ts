/**
 * redisStorage against a real Redis (127.0.0.1:6379, or CERTSTATE_TEST_REDIS_URL):
 * the shared conformance suite, then what only a networked backend can get
 * wrong: paused holders, SCAN paging, dead or silent servers, several clients.
 *
 * Every run works under its own random key prefix and deletes it afterwards.
 * Without a server the file fails under CI (the backend must be tested there)
 * and is skipped, loudly, on a developer machine.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { ConfigError, FencingError, LockLostError, StorageError } from '../src/errors.js';
import { redisStorage, type RedisStorage } from '../src/adapters/storage/redis.js';
import { runStorageConformance } from './helpers/storage-conformance.js';
import { startSeverableProxy } from './helpers/cluster-node.js';
import { REDIS_URL, collector, elapsed, purgeRedisPrefix, recovers, silentServer, suiteCanRun, assertLockTakenInTurn, assertWatchAnnouncesChanges } from './helpers/backends.js';

const RUN = `certstate-test:${randomUUID().slice(0, 8)}`;

/** A client as an application would make it. */
function newClient(): Redis {
  const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  client.on('error', () => {});
  return client;
}

if (await suiteCanRun('redis', 'redisStorage')) {
  let counter = 0;
  // A prefix full of glob metacharacters: list() must match it literally.
  runStorageConformance('redisStorage (caller-owned client, glob-hostile prefix)', async () => {
    const client = newClient();
    const prefix = `${RUN}:[c${counter++}]*?\\:`;
    const storage = redisStorage({ client, prefix });
    return {
      storage,
      async cleanup() {
        await storage.close();
        await purgeRedisPrefix(client, prefix);
        await client.quit();
      },
      faults: {
        // The lock and its counter are gone (a restart without persistence, a flush, a lagging replica).
        loseLock: async (lockKey) => void (await client.del(`${prefix}lock:${lockKey}`, `${prefix}fence:${lockKey}`)),
        setToken: async (lockKey, token) => void (await client.set(`${prefix}fence:${lockKey}`, String(token))),
      },
    };
  });

  runStorageConformance('redisStorage (url, own client)', async () => {
    const prefix = `${RUN}:u${counter++}:`;
    const storage = redisStorage({ url: REDIS_URL, prefix });
    return {
      storage,
      async cleanup() {
        await storage.close();
        const client = newClient();
        await purgeRedisPrefix(client, prefix);
        await client.quit();
      },
    };
  });

  describe('redisStorage: Redis specifics', () => {
    const clients: Redis[] = [];
    const storages: RedisStorage[] = [];
    let admin: Redis;

    /** A storage on its own connection, as another process would have. */
    function processStorage(prefix: string): RedisStorage {
      const client = newClient();
      clients.push(client);
      const storage = redisStorage({ client, prefix });
      storages.push(storage);
      return storage;
    }

    before(() => {
      admin = newClient();
    });

    after(async () => {
      for (const storage of storages) await storage.close();
      for (const client of clients) await client.quit();
      await purgeRedisPrefix(admin, `${RUN}:`);
      await admin.quit();
    });

    it('a lock() that gave up on a slow link leaves no lock taken on the server (the late acquisition is cancelled)', async () => {
      const prefix = `${RUN}:cancel:`;
      const target = new URL(REDIS_URL);
      const cut = await startSeverableProxy(Number(target.port || 6379), target.hostname);
      const slow = redisStorage({ url: `redis://${target.hostname}:${cut.port}`, prefix, operationTimeoutMs: 1000 });
      try {
        await recovers(() => slow.load('warm-up'), 5000); // connected
        cut.blackhole(true);
        await assert.rejects(slow.lock('locks/issue/example.com', 60_000), StorageError);
        cut.blackhole(false); // the delayed acquisition reaches the server now, and its cancellation after it
        await delay(500);
        const other = processStorage(prefix);
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), 3000);
        const lock = await other.lock('locks/issue/example.com', 10_000, { signal: controller.signal }).finally(() => clearTimeout(timer));
        await lock.release();
      } finally {
        await slow.close();
        await cut.close();
      }
    });

    it('refuses the write of a paused holder whose lease expired and was taken over', async () => {
      const prefix = `${RUN}:paused:`;
      const a = processStorage(prefix);
      const b = processStorage(prefix);
      const lockA = await a.lock('locks/issue/example.com', 150);
      await a.store('certificates/example.com.json', 'A1', { fence: { lockKey: lockA.key, token: lockA.fencingToken } });

      await delay(250); // A is "paused" (SIGSTOP) past its lease: no renewals
      const lockB = await b.lock('locks/issue/example.com', 5000);
      assert.ok(lockB.fencingToken > lockA.fencingToken, 'the new holder has a newer token');
      await b.store('certificates/example.com.json', 'B1', { fence: { lockKey: lockB.key, token: lockB.fencingToken } });

      // A wakes up and carries on as if it still held the lock.
      await assert.rejects(
        a.store('certificates/example.com.json', 'A2', { fence: { lockKey: lockA.key, token: lockA.fencingToken } }),
        FencingError,
      );
      await assert.rejects(lockA.renew(), LockLostError);
      await lockA.release(); // silently: it must not free B's lock
      assert.equal(await a.load('certificates/example.com.json'), 'B1');
      assert.equal(await admin.get(`${prefix}lock:locks/issue/example.com`) !== null, true, "B's lock survives A's release");
      await lockB.release();
    });

    it('never lets a fence drawn for one lock key pass for another, nor for a key never locked', async () => {
      const s = processStorage(`${RUN}:fence-keys:`);
      const lock = await s.lock('locks/one', 1000);
      await assert.rejects(s.store('k', 'v', { fence: { lockKey: 'locks/two', token: lock.fencingToken } }), FencingError);
      await assert.rejects(s.store('k', 'v', { fence: { lockKey: 'locks/never', token: 0 } }), FencingError);
      assert.equal(await s.load('k'), undefined);
      await lock.release();
    });

    it('lists more than 1000 keys by paging through SCAN, never KEYS', async () => {
      const prefix = `${RUN}:scan:`;
      const calls: string[] = [];
      const client = newClient();
      clients.push(client);
      // Record every command method the storage calls on the caller's client.
      const recording = new Proxy(client, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            calls.push(String(property));
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const storage = redisStorage({ client: recording, prefix });
      storages.push(storage);

      const wanted = Array.from({ length: 2500 }, (_, i) => `certificates/n${i}.example.json`);
      for (let i = 0; i < wanted.length; i += 250) {
        await Promise.all(wanted.slice(i, i + 250).map((key) => storage.store(key, 'x')));
      }
      await storage.store('failures/n1.example.json', 'not listed');
      // Same shape, other prefix: must not leak in.
      await processStorage(`${RUN}:scan-other:`).store('certificates/intruder.json', 'x');

      calls.length = 0;
      const listed = await storage.list('certificates/');
      assert.equal(listed.length, wanted.length, 'no duplicates, nothing missing');
      assert.deepEqual(new Set(listed), new Set(wanted));
      assert.ok(calls.filter((c) => c === 'scan').length > 1, `SCAN paged (${calls.join(',')})`);
      assert.ok(!calls.includes('keys'), 'KEYS is never used');
    });

    it('matches the key prefix literally, whatever glob characters it holds', async () => {
      const star = processStorage(`${RUN}:g*:`);
      const plain = processStorage(`${RUN}:gX:`);
      await plain.store('certificates/a.json', 'plain');
      await star.store('certificates/b.json', 'star');
      assert.deepEqual(await star.list(''), ['certificates/b.json']);
      assert.deepEqual(await plain.list(''), ['certificates/a.json']);
    });

    it('fails with StorageError promptly when the server refuses connections', async () => {
      const storage = redisStorage({ url: 'redis://127.0.0.1:1', prefix: `${RUN}:dead:`, operationTimeoutMs: 2000 });
      try {
        for (const op of [() => storage.load('a'), () => storage.store('a', 'b'), () => storage.lock('l', 1000), () => storage.list('')]) {
          const { ms, error } = await elapsed(op);
          assert.ok(error instanceof StorageError, `typed error, got ${String(error)}`);
          assert.ok(ms < 3000, `answered in ${Math.round(ms)} ms`);
        }
      } finally {
        await storage.close();
      }
    });

    it('fails with StorageError within operationTimeoutMs on a server that accepts and never answers, whatever the client settings', async () => {
      const silent = await silentServer();
      // ioredis defaults: offline queue on, 20 retries per request, no command timeout: on its own it would wait for ever.
      const client = new Redis({ host: '127.0.0.1', port: silent.port });
      client.on('error', () => {});
      const storage = redisStorage({ client, prefix: `${RUN}:silent:`, operationTimeoutMs: 500 });
      try {
        const controller = new AbortController();
        for (const op of [() => storage.load('a'), () => storage.lock('l', 1000, { signal: controller.signal })]) {
          const { ms, error } = await elapsed(op);
          assert.ok(error instanceof StorageError, `typed error, got ${String(error)}`);
          assert.equal((error as StorageError).code, 'ERR_STORAGE_TIMEOUT');
          assert.ok(ms >= 450 && ms < 1500, `bounded by operationTimeoutMs, took ${Math.round(ms)} ms`);
        }
      } finally {
        client.disconnect();
        await silent.close();
      }
    });

    it('carries on after its connection was cut (server restart, failover)', async () => {
      const storage = redisStorage({ url: REDIS_URL, prefix: `${RUN}:cut:` });
      storages.push(storage);
      await storage.store('k', 'before');
      const list = (await admin.client('LIST')) as string;
      const ids = list.split('\n').filter((line) => / name=certstate /.test(line)).map((line) => /id=(\d+)/.exec(line)![1]);
      assert.ok(ids.length >= 1, 'the storage names its connection');
      for (const id of ids) await admin.client('KILL', 'ID', id);
      await recovers(() => storage.store('k', 'after'), 5000);
      assert.equal(await storage.load('k'), 'after');
    });

    it('gives two clients (two processes) one lock in turn, with growing fencing tokens and no lost update', async () => {
      const prefix = `${RUN}:contend:`;
      const sides = [processStorage(prefix), processStorage(prefix)];
      await assertLockTakenInTurn([sides[0], sides[1]]);
    });

    it('reloads its scripts after the server forgot them (restart, SCRIPT FLUSH)', async () => {
      const s = processStorage(`${RUN}:noscript:`);
      await s.store('k', 'v1');
      await admin.script('FLUSH');
      await s.store('k', 'v2');
      const lock = await s.lock('l', 1000);
      await admin.script('FLUSH');
      await lock.renew();
      await lock.release();
      assert.equal(await s.load('k'), 'v2');
    });

    it("stamps `modified` with the server's clock and reports the size in bytes", async () => {
      const s = processStorage(`${RUN}:stat:`);
      const [seconds, micros] = await admin.time();
      const serverNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
      await s.store('k', 'é€');
      const stat = await s.stat('k');
      assert.ok(stat);
      assert.equal(stat.size, 5);
      assert.ok(Math.abs(stat.modified - serverNow) < 2000, `${stat.modified} vs server ${serverNow}`);
    });

    it('leaves a caller-owned client open on close(), and refuses calls once closed', async () => {
      const client = newClient();
      clients.push(client);
      const s = redisStorage({ client, prefix: `${RUN}:close:` });
      await s.store('k', 'v');
      await s.close();
      assert.equal(await client.ping(), 'PONG');
      await assert.rejects(s.load('k'), StorageError);
    });

    it('tells a watcher of every write and delete under its prefix made by another client, and nothing else', async () => {
      const prefix = `${RUN}:watch:`;
      const watching = processStorage(prefix);
      const writer = processStorage(prefix);
      await assertWatchAnnouncesChanges(watching, writer, () => processStorage(`${RUN}:watch-other:`).store('certificates/a.json', 'other prefix'));
    });

    it('tells a watcher to resync after its connection was cut, then keeps watching', async () => {
      const prefix = `${RUN}:watch-cut:`;
      const watching = processStorage(prefix);
      const writer = processStorage(prefix);
      const seen = collector();
      await watching.watch('', seen.onChange);
      const list = (await admin.client('LIST')) as string;
      const ids = list.split('\n').filter((line) => line.includes('name=certstate-watch')).map((line) => /id=(\d+)/.exec(line)![1]);
      assert.ok(ids.length >= 1, 'the watcher has its own named connection');
      for (const id of ids) await admin.client('KILL', 'ID', id);
      await seen.until((c) => c.some((change) => change.type === 'resync'), 'resync');
      await writer.store('k', 'v');
      await seen.until((c) => c.some((change) => change.type === 'store' && change.key === 'k'), 'store after reconnection');
      await watching.close(); // stops its watchers too: the test would otherwise keep the process alive
    });

    it('refuses bad configuration', () => {
      const client = newClient();
      clients.push(client);
      assert.throws(() => redisStorage({} as never), ConfigError);
      assert.throws(() => redisStorage({ client, url: REDIS_URL }), ConfigError);
      assert.throws(() => redisStorage({ client, prefix: '' }), ConfigError);
      const prefixed = new Redis(REDIS_URL, { keyPrefix: 'x:', lazyConnect: true });
      assert.throws(() => redisStorage({ client: prefixed }), ConfigError);
      prefixed.disconnect();
    });
  });
}

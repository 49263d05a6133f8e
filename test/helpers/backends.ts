/**
 * The Redis and PostgreSQL servers tests talk to: where they are, whether
 * they answer (and what a suite does when they do not), short-lived clients
 * for setup and clean-up, a server that accepts connections and never
 * answers (the worst kind of dead backend), and timing helpers.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { StorageChange, WatchableStorage } from '../../src/adapters/storage/notify.js';
import { escapeRedisGlob } from '../../src/adapters/storage/redis.js';
import { StorageError } from '../../src/errors.js';
import type { Storage } from '../../src/types.js';

export const REDIS_URL = process.env.CERTSTATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** `CERTSTATE_TEST_POSTGRES_URL` (or its older name `CERTSTATE_TEST_DATABASE_URL`). */
export const POSTGRES_URL = process.env.CERTSTATE_TEST_POSTGRES_URL ?? process.env.CERTSTATE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Why Redis cannot be used, or `undefined` when it answers PING. */
export async function redisProblem(url = REDIS_URL): Promise<string | undefined> {
  const { Redis } = await import('ioredis');
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
  let cause: Error | undefined; // the socket's error says more than "Connection is closed."
  probe.on('error', (error: Error) => (cause ??= error));
  try {
    await probe.connect();
    await probe.ping();
    return undefined;
  } catch (error) {
    return (cause ?? (error as Error)).message ?? String(error);
  } finally {
    probe.disconnect();
  }
}

/** Why PostgreSQL cannot be used, or `undefined` when it answers. */
export async function postgresProblem(url = POSTGRES_URL): Promise<string | undefined> {
  try {
    await withPostgres(url, (client) => client.query('SELECT 1'));
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** Run `use` with a connected Redis client, disconnected afterwards. */
export async function withRedis<T>(url: string, use: (client: Redis) => Promise<T>): Promise<T> {
  const { Redis } = await import('ioredis');
  const client = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

/** Run `use` with a connected PostgreSQL client (the URL's query options, e.g. a table name, dropped), closed afterwards. */
export async function withPostgres<T>(connectionString: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const { default: pgModule } = await import('pg');
  const url = new URL(connectionString);
  url.search = '';
  const client = new pgModule.Client({ connectionString: url.toString(), connectionTimeoutMillis: 2000 });
  client.on('error', () => {});
  try {
    await client.connect();
    return await use(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Delete every Redis key under `prefix` (SCAN, so it is safe on a shared server). */
export async function purgeRedisPrefix(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `${escapeRedisGlob(prefix)}*`, 'COUNT', 1000);
    if (found.length > 0) await client.del(...found);
    cursor = next;
  } while (cursor !== '0');
}

/** A TCP server that accepts connections and never says a word. */
export async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

type Backend = 'redis' | 'postgres';
const LABEL: Record<Backend, string> = { redis: 'Redis', postgres: 'PostgreSQL' };
const WHERE: Record<Backend, { url: string; env: string }> = {
  redis: { url: REDIS_URL, env: 'CERTSTATE_TEST_REDIS_URL' },
  postgres: { url: POSTGRES_URL, env: 'CERTSTATE_TEST_POSTGRES_URL' },
};

function backendProblem(kind: Backend): Promise<string | undefined> {
  return kind === 'redis' ? redisProblem() : postgresProblem();
}

/**
 * Whether the suite `suite` can run against `kind`. When the server does not
 * answer, registers in its place a test that fails under CI (CI must provide
 * the server) or, on a developer machine, a loudly skipped one.
 */
export async function suiteCanRun(kind: Backend, suite: string): Promise<boolean> {
  const problem = await backendProblem(kind);
  if (problem === undefined) return true;
  const { url, env } = WHERE[kind];
  const label = LABEL[kind];
  if (process.env.CI) {
    describe(suite, () => {
      it(`needs a ${label} server`, () => {
        assert.fail(`${label} is unreachable at ${url} (${problem}); CI must provide one (set ${env})`);
      });
    });
    return false;
  }
  console.warn(`\n!!! SKIPPING the ${label} storage tests: ${label} is unreachable at ${url} (${problem}).\n!!! Start ${label} or set ${env}; under CI these tests fail instead.\n`);
  describe(suite, () => {
    it(`needs a ${label} server`, { skip: `${label} unreachable at ${url}` }, () => {});
  });
  return false;
}

/**
 * `false` when the backend can be used; else the reason to skip — or, under
 * CI, an exception: CI must never silently skip the cluster tests.
 */
export async function backendSkip(kind: Backend): Promise<false | string> {
  const problem = await backendProblem(kind);
  if (problem === undefined) return false;
  const { url } = WHERE[kind];
  if (process.env.CI) throw new Error(`${kind} is unreachable at ${url} (${problem}); CI must provide it`);
  console.warn(`\n*** SKIP: ${kind} unreachable at ${url} (${problem}); the cluster tests on it are skipped (they fail under CI) ***\n`);
  return `${kind} unreachable at ${url}`;
}

// ─── Timing a networked storage ────────────────────────────────────────────

/** How long `fn` took, and what it threw (if anything). */
export async function elapsed(fn: () => Promise<unknown>): Promise<{ ms: number; error: unknown }> {
  const start = performance.now();
  try {
    await fn();
    return { ms: performance.now() - start, error: undefined };
  } catch (error) {
    return { ms: performance.now() - start, error };
  }
}

/** Retry `op` until it succeeds (every failure a StorageError), or fail after `ms`. */
export async function recovers(op: () => Promise<unknown>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await op();
      return;
    } catch (error) {
      assert.ok(error instanceof StorageError, `typed error while recovering, got ${String(error)}`);
      if (Date.now() > deadline) throw error;
      await delay(50);
    }
  }
}

/** Collect a watcher's changes, and wait until they satisfy a predicate. */
export function collector() {
  const changes: StorageChange[] = [];
  return {
    changes,
    onChange: (change: StorageChange) => void changes.push(change),
    async until(predicate: (changes: StorageChange[]) => boolean, what: string, ms = 5000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!predicate(changes)) {
        if (Date.now() > deadline) assert.fail(`${what}: not seen within ${ms} ms; got ${JSON.stringify(changes)}`);
        await delay(10);
      }
    },
  };
}

/**
 * Two processes' storages (two workers each) take one lock in turn, ten times
 * a worker, each incrementing a counter under it with a fenced write: never
 * two holders at once, no lost update, fencing tokens growing in acquisition
 * order.
 */
export async function assertLockTakenInTurn(sides: readonly [Storage, Storage]): Promise<void> {
  let inside = 0;
  let maxInside = 0;
  const tokens: number[] = [];
  const worker = async (storage: Storage) => {
    for (let i = 0; i < 10; i++) {
      const lock = await storage.lock('locks/counter', 2000);
      inside++;
      maxInside = Math.max(maxInside, inside);
      tokens.push(lock.fencingToken);
      const n = Number((await storage.load('counter')) ?? '0');
      await delay(Math.random() * 3);
      await storage.store('counter', String(n + 1), { fence: { lockKey: lock.key, token: lock.fencingToken } });
      inside--;
      await lock.release();
    }
  };
  await Promise.all([worker(sides[0]), worker(sides[0]), worker(sides[1]), worker(sides[1])]);
  assert.equal(maxInside, 1, 'never two holders at once');
  assert.equal(await sides[1].load('counter'), '40', 'no lost update');
  for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, `tokens grow in acquisition order: ${tokens.join(',')}`);
}

/**
 * A watcher of `certificates/` on one process hears another process's store
 * and delete there, and nothing else: not other prefixes, not a write refused
 * by its fence, not a delete of nothing, nothing after unwatch. `before` runs
 * after the first store (e.g. a write under another prefix of the backend).
 */
export async function assertWatchAnnouncesChanges(watching: WatchableStorage, writer: Storage, before: () => Promise<unknown> = async () => {}): Promise<void> {
  const seen = collector();
  const unwatch = await watching.watch('certificates/', seen.onChange);
  await writer.store('certificates/a.json', '1');
  await writer.store('failures/a.json', 'not watched');
  await before();
  const lock = await writer.lock('locks/w', 100);
  await delay(150);
  await (await writer.lock('locks/w', 1000)).release();
  await assert.rejects(writer.store('certificates/a.json', 'refused', { fence: { lockKey: lock.key, token: lock.fencingToken } }), { code: 'ERR_FENCED' });
  await writer.delete('certificates/a.json');
  await writer.delete('certificates/a.json'); // nothing deleted: nothing to announce
  await seen.until((c) => c.length >= 2, 'store and delete');
  await delay(100);
  assert.deepEqual(seen.changes, [
    { type: 'store', key: 'certificates/a.json' },
    { type: 'delete', key: 'certificates/a.json' },
  ]);
  await unwatch();
  await writer.store('certificates/b.json', 'after unwatch');
  await delay(100);
  assert.equal(seen.changes.length, 2, 'nothing after unwatch');
}

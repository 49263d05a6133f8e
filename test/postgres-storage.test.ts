/**
 * postgresStorage against a real PostgreSQL (127.0.0.1:5432 database `test`,
 * or CERTSTATE_TEST_POSTGRES_URL): the shared conformance suite, then what only
 * a networked backend can get wrong: paused holders, a take-over racing a
 * fenced write, dead or silent servers, several pools, concurrent migrations.
 *
 * Every run uses its own tables and drops them afterwards. Without a server
 * the file fails under CI and is skipped, loudly, on a developer machine.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { ConfigError, FencingError, LockLostError, StorageError } from '../src/errors.js';
import { PAGE_BYTES } from '../src/adapters/storage/bulk-pages.js';
import { likePrefixPattern, migratePostgres, postgresStorage, type PostgresStorage } from '../src/adapters/storage/postgres.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import type { Storage } from '../src/types.js';
import { scriptedIssuer, seededStorage } from './helpers/scripted-issuer.js';
import { runStorageConformance } from './helpers/storage-conformance.js';
import { POSTGRES_URL, collector, elapsed, recovers, silentServer, suiteCanRun, assertLockTakenInTurn, assertWatchAnnouncesChanges } from './helpers/backends.js';


/** A fresh table name for this run. */
const freshTable = () => `certstate_test_${randomBytes(5).toString('hex')}`;

/** A pool as an application would make it (with the `error` listener pg requires). */
function newPool(max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max, connectionTimeoutMillis: 5000 });
  pool.on('error', () => {});
  return pool;
}

async function dropTables(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_locks", "${table}_index"`);
}

if (await suiteCanRun('postgres', 'postgresStorage')) {
  runStorageConformance('postgresStorage (caller-owned pool)', async () => {
    const pool = newPool();
    const table = freshTable();
    const storage = postgresStorage({ pool, table });
    return {
      storage,
      async cleanup() {
        await storage.close();
        await dropTables(pool, table);
        await pool.end();
      },
      faults: {
        // The lock row is gone (a restore from an older backup, a TRUNCATE).
        loseLock: async (lockKey) => void (await pool.query(`DELETE FROM "${table}_locks" WHERE key = $1`, [lockKey])),
        setToken: async (lockKey, token) => void (await pool.query(`UPDATE "${table}_locks" SET fencing_token = $2 WHERE key = $1`, [lockKey, String(token)])),
      },
    };
  });

  runStorageConformance('postgresStorage (connectionString, own pool)', async () => {
    const table = freshTable();
    const storage = postgresStorage({ connectionString: POSTGRES_URL, table });
    return {
      storage,
      async cleanup() {
        await storage.close();
        const pool = newPool(1);
        await dropTables(pool, table);
        await pool.end();
      },
    };
  });

  describe('postgresStorage: PostgreSQL specifics', () => {
    const table = freshTable();
    const pools: pg.Pool[] = [];
    const storages: PostgresStorage[] = [];
    let admin: pg.Pool;

    /** A storage on its own pool, as another process would have. */
    function processStorage(options: { table?: string } = {}): PostgresStorage {
      const pool = newPool();
      pools.push(pool);
      const storage = postgresStorage({ pool, table: options.table ?? table });
      storages.push(storage);
      return storage;
    }

    before(() => {
      admin = newPool();
    });

    after(async () => {
      for (const storage of storages) await storage.close();
      for (const pool of pools) await pool.end();
      await dropTables(admin, table);
      await admin.end();
    });

    it('refuses the write of a paused holder whose lease expired and was taken over', async () => {
      const a = processStorage();
      const b = processStorage();
      const lockA = await a.lock('locks/issue/example.com', 150);
      await a.store('certificates/example.com.json', 'A1', { fence: { lockKey: lockA.key, token: lockA.fencingToken } });

      await delay(250); // A is "paused" (SIGSTOP) past its lease: no renewals
      const lockB = await b.lock('locks/issue/example.com', 5000);
      assert.ok(lockB.fencingToken > lockA.fencingToken, 'the new holder has a newer token');
      await b.store('certificates/example.com.json', 'B1', { fence: { lockKey: lockB.key, token: lockB.fencingToken } });

      await assert.rejects(
        a.store('certificates/example.com.json', 'A2', { fence: { lockKey: lockA.key, token: lockA.fencingToken } }),
        FencingError,
      );
      await assert.rejects(lockA.renew(), LockLostError);
      await lockA.release(); // silently: it must not free B's lock
      assert.equal(await a.load('certificates/example.com.json'), 'B1');
      const { rows } = await admin.query(`SELECT expires_at > now() AS held FROM "${table}_locks" WHERE key = $1`, ['locks/issue/example.com']);
      assert.equal(rows[0].held, true, "B's lease survives A's release");
      await lockB.release();
    });

    it('keeps fencing tokens growing across release and re-acquisition (lock rows are never deleted)', async () => {
      const s = processStorage();
      const seen: number[] = [];
      for (let i = 0; i < 5; i++) {
        const lock = await s.lock('locks/reuse', 1000);
        seen.push(lock.fencingToken);
        await lock.release();
      }
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `tokens grow: ${seen}`);
    });

    it('holds a fenced write against a take-over in flight, then refuses it', async () => {
      const a = processStorage();
      const lockA = await a.lock('locks/race', 100);
      await delay(150); // lease over
      // Another process is taking the lock over, inside a transaction not yet committed.
      const other = await admin.connect();
      try {
        await other.query('BEGIN');
        const taken = await other.query(
          `UPDATE "${table}_locks" SET holder = 'other', fencing_token = fencing_token + 1, expires_at = now() + interval '10 s'
           WHERE key = 'locks/race' AND expires_at <= now() RETURNING fencing_token`,
        );
        assert.equal(taken.rowCount, 1);
        let settled = false;
        const write = a.store('race', 'stale', { fence: { lockKey: lockA.key, token: lockA.fencingToken } });
        write.then(() => (settled = true), () => (settled = true));
        await delay(200);
        assert.equal(settled, false, 'the fenced write waits for the take-over to commit or roll back');
        await other.query('COMMIT');
        await assert.rejects(write, FencingError);
        assert.equal(await a.load('race'), undefined);
      } finally {
        // On failure the take-over is still open and would block dropping the tables.
        await other.query('ROLLBACK').catch(() => {});
        other.release();
      }
    });

    it("cancels a statement in the server once its deadline passed, on a caller's pool without statement_timeout: a write reported failed never lands later", async () => {
      await processStorage().migrate(); // (under the default timeout: a loaded machine may take longer than 300 ms to create tables)
      const pool = newPool();
      pools.push(pool);
      const s = postgresStorage({ pool, table, operationTimeoutMs: 1000 });
      storages.push(s);
      const lock = await s.lock('locks/deadline', 60_000);
      const fence = { lockKey: lock.key, token: lock.fencingToken };
      // Another session holds the lease row (a slow transaction): the fenced write queues behind it.
      const other = await admin.connect();
      const waiting = async () => {
        const { rows } = await admin.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND query LIKE '%FOR SHARE%'`,
          [`%INSERT INTO "${table}"%`],
        );
        return rows[0].n as number;
      };
      try {
        await other.query('BEGIN');
        await other.query(`SELECT 1 FROM "${table}_locks" WHERE key = 'locks/deadline' FOR UPDATE`);
        await assert.rejects(s.store('deadline/value', 'late', { fence }), { code: 'ERR_STORAGE_TIMEOUT' });
        // The server gives up too: nothing of ours is left queued behind the row lock.
        let left = await waiting();
        for (let i = 0; i < 50 && left > 0; i++) {
          await delay(100);
          left = await waiting();
        }
        assert.equal(left, 0, 'the timed-out statement still waits in the server');
        await other.query('COMMIT');
        await delay(300);
        assert.equal(await s.load('deadline/value'), undefined, 'the write reported as failed never landed');
      } finally {
        await other.query('ROLLBACK').catch(() => {});
        other.release();
      }
      // The caller's connections are left as they were, and the storage goes on working.
      const { rows } = await pool.query('SHOW statement_timeout');
      assert.equal(rows[0].statement_timeout, '0');
      await s.store('deadline/value', 'now', { fence });
      assert.equal(await s.load('deadline/value'), 'now');
      await lock.release();
    });

    it("reports the server's own statement timeout as ERR_STORAGE_TIMEOUT, like the client's deadline", async () => {
      await processStorage().migrate();
      // The caller's pool cancels statements after 300 ms, well before the storage's own deadline:
      // the server's timer fires first (SQLSTATE 57014), and the caller still sees a timeout.
      const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2, statement_timeout: 300 });
      pool.on('error', () => {});
      pools.push(pool);
      const s = postgresStorage({ pool, table, operationTimeoutMs: 10_000 });
      storages.push(s);
      const lock = await s.lock('locks/server-deadline', 60_000);
      const other = await admin.connect();
      try {
        await other.query('BEGIN');
        await other.query(`SELECT 1 FROM "${table}_locks" WHERE key = 'locks/server-deadline' FOR UPDATE`);
        const t0 = Date.now();
        await assert.rejects(s.store('server-deadline/value', 'late', { fence: { lockKey: lock.key, token: lock.fencingToken } }), (error: unknown) => {
          assert.ok(error instanceof StorageError);
          assert.equal(error.code, 'ERR_STORAGE_TIMEOUT', error.message);
          assert.match(error.message, /57014/);
          return true;
        });
        assert.ok(Date.now() - t0 < 5000, 'the server cancelled it, not the storage deadline');
      } finally {
        await other.query('ROLLBACK').catch(() => {});
        other.release();
      }
      await lock.release();
    });

    it('lists over 1000 keys, escaping LIKE wildcards (`_` is a valid key character)', async () => {
      const s = processStorage();
      const wanted = Array.from({ length: 1500 }, (_, i) => `list_x/n${i}.json`);
      for (let i = 0; i < wanted.length; i += 250) {
        await Promise.all(wanted.slice(i, i + 250).map((key) => s.store(key, 'x')));
      }
      await s.store('listAx/not-me.json', 'matches list_x only if _ were a wildcard');
      const listed = await s.list('list_x/');
      assert.equal(listed.length, wanted.length);
      assert.deepEqual(new Set(listed), new Set(wanted));
      assert.equal(likePrefixPattern('a_b%c!'), 'a!_b!%c!!%');
    });

    it('fails with StorageError promptly when the server refuses connections', async () => {
      const storage = postgresStorage({ connectionString: 'postgres://postgres@127.0.0.1:1/test', table, operationTimeoutMs: 2000 });
      try {
        for (const op of [() => storage.load('a'), () => storage.store('a', 'b'), () => storage.lock('l', 1000), () => storage.migrate()]) {
          const { ms, error } = await elapsed(op);
          assert.ok(error instanceof StorageError, `typed error, got ${String(error)}`);
          assert.ok(ms < 3000, `answered in ${Math.round(ms)} ms`);
        }
      } finally {
        await storage.close();
      }
    });

    it('fails with StorageError within operationTimeoutMs on a server that accepts and never answers, whatever the pool settings', async () => {
      const silent = await silentServer();
      // pg defaults: no connection timeout, no query timeout: on its own it would wait for ever.
      const pool = new pg.Pool({ host: '127.0.0.1', port: silent.port, user: 'postgres', database: 'test' });
      pool.on('error', () => {});
      const storage = postgresStorage({ pool, table, operationTimeoutMs: 500 });
      try {
        for (const op of [() => storage.load('a'), () => storage.lock('l', 1000)]) {
          const { ms, error } = await elapsed(op);
          assert.ok(error instanceof StorageError, `typed error, got ${String(error)}`);
          assert.ok(ms >= 450 && ms < 1500, `bounded by operationTimeoutMs, took ${Math.round(ms)} ms`);
        }
      } finally {
        await silent.close();
        await pool.end().catch(() => {});
      }
    });

    it('carries on after its connections were cut (server restart, failover)', async () => {
      const storage = postgresStorage({ connectionString: POSTGRES_URL, table, poolConfig: { application_name: `certstate-cut-${table}` } });
      storages.push(storage);
      await storage.store('cut', 'before');
      const killed = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [
        `certstate-cut-${table}`,
      ]);
      assert.ok((killed.rowCount ?? 0) >= 1);
      await recovers(() => storage.store('cut', 'after'), 5000);
      assert.equal(await storage.load('cut'), 'after');
    });

    it('gives two pools (two processes) one lock in turn, with growing fencing tokens and no lost update', async () => {
      const sides = [processStorage(), processStorage()];
      await assertLockTakenInTurn([sides[0], sides[1]]);
    });

    it('migrates idempotently, from many processes at once', async () => {
      const fresh = freshTable();
      try {
        const racing = Array.from({ length: 6 }, () => processStorage({ table: fresh }));
        await Promise.all(racing.map((s) => s.migrate()));
        await migratePostgres(admin, { table: fresh });
        await racing[0].store('k', 'v');
        assert.equal(await racing[5].load('k'), 'v');
      } finally {
        await dropTables(admin, fresh);
      }
    });

    it('surfaces a missing table as StorageError when autoMigrate is off, and works after migrate()', async () => {
      const fresh = freshTable();
      const pool = newPool(1);
      pools.push(pool);
      const s = postgresStorage({ pool, table: fresh, autoMigrate: false });
      try {
        await assert.rejects(s.load('k'), StorageError);
        await s.migrate();
        await s.store('k', 'v');
        assert.equal(await s.load('k'), 'v');
      } finally {
        await dropTables(admin, fresh);
      }
    });

    it("stamps `modified` with the database clock and stores any string exactly (U+0000 included)", async () => {
      const s = processStorage();
      const { rows } = await admin.query(`SELECT floor(extract(epoch FROM now()) * 1000)::float8 AS now`);
      await s.store('exact', 'a\u0000é€');
      assert.equal(await s.load('exact'), 'a\u0000é€');
      const stat = await s.stat('exact');
      assert.ok(stat);
      assert.equal(stat.size, 7);
      assert.ok(Math.abs(stat.modified - rows[0].now) < 2000, `${stat.modified} vs database ${rows[0].now}`);
    });

    it('gives in its bulk read (binary format) exactly the string load gives: U+0000, multi-byte characters, a value of a MiB, on both kinds of pool', async () => {
      const values = ['a\u0000é€𝄞', '', '{"a":"\\u0000"}', 'x'.repeat(1 << 20) + 'é'];
      // A caller's pool without statement_timeout (each statement in a transaction) and the storage's own pool.
      for (const s of [processStorage(), postgresStorage({ connectionString: POSTGRES_URL, table })]) {
        try {
          for (const [i, value] of values.entries()) await s.store(`exact_bulk/v${i}`, value);
          const seen = new Map<string, string>();
          for await (const batch of s.entries!('exact_bulk/')) for (const [key, value] of batch) seen.set(key, value);
          assert.equal(seen.size, values.length);
          for (const [i, value] of values.entries()) {
            assert.equal(seen.get(`exact_bulk/v${i}`), value, `value ${i} as stored`);
            assert.equal(await s.load(`exact_bulk/v${i}`), value);
          }
        } finally {
          if (!storages.includes(s)) await s.close();
        }
      }
    });

    it('reads in bulk only the values `only` wants, past pages that want none, every wanted one once', async () => {
      const s = processStorage();
      const keys = Array.from({ length: 3200 }, (_, i) => `only_bulk/k${String(i).padStart(5, '0')}`);
      for (let i = 0; i < keys.length; i += 400) await Promise.all(keys.slice(i, i + 400).map((key, j) => s.store(key, `v${i + j}`)));
      // Wanted: two keys of the first page, none of the second or third, the very last key.
      const wanted = new Set([keys[3]!, keys[999]!, keys[3199]!]);
      const seen: string[] = [];
      let batches = 0;
      for await (const batch of s.entries!('only_bulk/', { only: (key) => wanted.has(key) })) {
        batches++;
        for (const [key, value, version] of batch) {
          seen.push(key);
          assert.equal(value, `v${Number(key.slice(-5))}`);
          assert.match(version!, /^\d+\.\d+$/);
        }
      }
      assert.deepEqual(seen.sort(), [...wanted].sort());
      assert.equal(batches, 2, 'pages that want nothing yield nothing, and do not end the read');
    });

    it('cuts a bulk-read page at PAGE_BYTES of values (a larger value alone): rows of hostile size never pile up in a page', async () => {
      const s = processStorage();
      const mib = 1 << 20;
      assert.equal(PAGE_BYTES, 16 * mib);
      for (let i = 0; i < 3; i++) await s.store(`big_bulk/v${i}`, 'x'.repeat(7 * mib) + i);
      await s.store('big_bulk/v3', 'y'.repeat(20 * mib));
      await s.store('big_bulk/v4', 'small');
      const pages: number[][] = [];
      for await (const batch of s.entries!('big_bulk/')) pages.push(batch.map(([, value]) => value.length));
      assert.deepEqual(pages, [[7 * mib + 1, 7 * mib + 1], [7 * mib + 1], [20 * mib], [5]]);
    });

    it('gives each value a version that every write changes (the same bytes too), the same from entries, versions and loadVersioned', async () => {
      const s = processStorage();
      const index = s.startupIndex!;
      await s.store('ver/a', 'same');
      await s.store('ver/b', 'other');
      const versions = async () => {
        const found = new Map<string, string>();
        for await (const batch of index.versions('ver/')) for (const [key, version] of batch) found.set(key, version);
        return found;
      };
      const before = await versions();
      assert.equal(before.size, 2);
      for await (const batch of s.entries!('ver/')) for (const [key, , version] of batch) assert.equal(version, before.get(key), `${key}: entries and versions agree`);
      assert.deepEqual(await index.loadVersioned('ver/a'), { value: 'same', version: before.get('ver/a') });
      assert.equal(await index.loadVersioned('ver/none'), undefined);
      await s.store('ver/a', 'same');
      const after = await versions();
      assert.notEqual(after.get('ver/a'), before.get('ver/a'), 'rewritten with the same bytes: another version');
      assert.equal(after.get('ver/b'), before.get('ver/b'), 'untouched: the same version');
      // A row changed behind the storage's back (an operator's UPDATE that leaves `modified` alone) too.
      await admin.query(`UPDATE "${table}" SET value = value WHERE key = 'ver/b'`);
      assert.notEqual((await versions()).get('ver/b'), before.get('ver/b'), 'an UPDATE in SQL: another version');
    });

    it('keeps the start-up index as generations: read back line for line, replaced whole, a write cut short leaves the last one, a chunk past maxBytes refused unread', async () => {
      const indexTable = freshTable();
      const s = processStorage({ table: indexTable });
      await s.migrate();
      const index = s.startupIndex!;
      const read = async (maxBytes = 1 << 30) => {
        const lines: string[] = [];
        for await (const batch of index.read(maxBytes)) lines.push(...batch);
        return lines;
      };
      async function* batches(lines: string[], failAfter = Infinity): AsyncGenerator<string[]> {
        for (let i = 0; i < lines.length; i += 1000) {
          if (i >= failAfter) throw new Error('the engine stopped mid-write');
          yield lines.slice(i, i + 1000);
        }
      }
      try {
        assert.deepEqual(await read(), [], 'no index yet: nothing');
        // ~2.6 MB: three chunks; lines of every kind of character.
        const first = Array.from({ length: 9000 }, (_, i) => JSON.stringify([`n${i}.example`, `v${i}`, 'é€𝄞', 'x'.repeat(256)]));
        await index.write(batches(first));
        assert.deepEqual(await read(), first);
        const second = first.slice(0, 8000).map((line) => `${line} `);
        // Cut short after ~1.8 MB: one chunk of it is in the table, and no mark.
        await assert.rejects(index.write(batches(second, 6000)), /mid-write/);
        const { rows: cut } = await admin.query(`SELECT count(DISTINCT gen)::int AS gens FROM "${indexTable}_index"`);
        assert.equal(cut[0].gens, 2, 'the generation cut short left a chunk');
        assert.deepEqual(await read(), first, 'a write cut short: the last complete index is read');
        await index.write(batches(second));
        assert.deepEqual(await read(), second, 'replaced whole');
        const { rows } = await admin.query(`SELECT count(DISTINCT gen)::int AS gens FROM "${indexTable}_index"`);
        assert.equal(rows[0].gens, 1, 'older generations (complete or cut short) removed');
        // Bounded: the reader stops at the chunk that would pass maxBytes, whose bytes are never sent.
        await assert.rejects(read(500_000), (error: unknown) => error instanceof StorageError && (error as StorageError).code === 'ERR_STORAGE_CORRUPT' && /larger than 500000/.test((error as Error).message));
        // Bytes that are not UTF-8.
        await admin.query(`UPDATE "${indexTable}_index" SET chunk = '\\xfffe'::bytea WHERE seq = 1`);
        await assert.rejects(read(), /not valid UTF-8/);
      } finally {
        await dropTables(admin, indexTable);
      }
    });

    it('restarts an engine from the start-up index: names slept from it, only the values of the names with actors read in bulk; a value changed meanwhile is caught by the check', async () => {
      const indexTable = freshTable();
      const s = processStorage({ table: indexTable });
      const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
      const names = Array.from({ length: 300 }, (_, i) => `n${i}.localhost`);
      const generation = async () => Number((await admin.query(`SELECT coalesce(max(gen), 0)::text AS gen FROM "${indexTable}_index" WHERE seq = 0`)).rows[0].gen);
      const written = async (after: number) => {
        for (let i = 0; i < 200 && (await generation()) <= after; i++) await delay(50);
        assert.ok((await generation()) > after, 'the index was written after start-up');
      };
      try {
        await seededStorage(names, clock, s);
        const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
        // A first start: no index yet, every value read in bulk; the index is written after it.
        const first = createCertEngine({ storage: s, issuers: [issuer], names, clock, maxLiveActors: 5 });
        await first.start();
        await written(0);
        await first.stop();
        // While no engine runs, another process replaces one certificate (asleep in the next start).
        const replaced = names[200]!;
        await seededStorage([replaced], clock, processStorage({ table: indexTable }));
        const replacedFingerprint = await (async () => {
          const unit = JSON.parse((await s.load(`certificates/${replaced}.json`))!) as { meta: { fingerprint: string } };
          return unit.meta.fingerprint;
        })();
        const before = await generation();
        let valuesRead = 0;
        const counted: Storage = {
          ...s,
          entries: async function* (prefix, options) {
            for await (const batch of s.entries!(prefix, options)) {
              valuesRead += batch.length;
              yield batch;
            }
          },
        };
        const second = createCertEngine({ storage: counted, issuers: [issuer], names, clock, maxLiveActors: 5 });
        await second.start();
        try {
          assert.equal(valuesRead, 5, 'only the names given actors are read in bulk: the rest sleep from the index');
          assert.equal(second.statusSummary({ expiry: false }).byState.valid, 300);
          await written(before);
          assert.equal(second.statusOf(replaced)?.certificate?.fingerprint, replacedFingerprint, 'the certificate replaced since the index is the one known, after the check');
          assert.equal(issuer.calls, 0, 'nothing ordered by either start');
        } finally {
          await second.stop();
        }
      } finally {
        await dropTables(admin, indexTable);
      }
    });

    it('leaves a caller-owned pool open on close(), and refuses calls once closed', async () => {
      const pool = newPool(1);
      pools.push(pool);
      const s = postgresStorage({ pool, table });
      await s.store('k', 'v');
      await s.close();
      assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
      await assert.rejects(s.load('k'), StorageError);
    });

    it('tells a watcher of every write and delete under its prefix made by another pool, and nothing else', async () => {
      const watching = processStorage();
      const writer = processStorage();
      await assertWatchAnnouncesChanges(watching, writer);
    });

    it('tells a watcher to resync after its connection was cut, then keeps watching', async () => {
      const watching = processStorage();
      const writer = processStorage();
      const seen = collector();
      await watching.watch('', seen.onChange);
      const killed = await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()`,
        [`LISTEN "${table}"`],
      );
      assert.equal(killed.rowCount, 1, 'exactly one listening connection');
      await seen.until((c) => c.some((change) => change.type === 'resync'), 'resync');
      await writer.store('k2', 'v');
      await seen.until((c) => c.some((change) => change.type === 'store' && change.key === 'k2'), 'store after reconnection');
      await watching.close(); // stops its watchers too: the test would otherwise keep the process alive
    });

    it('refuses bad configuration, table names that are not plain identifiers above all', () => {
      const pool = newPool(1);
      pools.push(pool);
      assert.throws(() => postgresStorage({} as never), ConfigError);
      assert.throws(() => postgresStorage({ pool, connectionString: POSTGRES_URL }), ConfigError);
      for (const bad of ['', 'Certstate', 'x; DROP TABLE y', 'a"b', '1abc', 'x'.repeat(58)]) {
        assert.throws(() => postgresStorage({ pool, table: bad }), ConfigError, bad);
      }
    });
  });
}

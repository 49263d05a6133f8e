/**
 * bench:scale on PostgreSQL: the dataset's certificate units seeded into a
 * table of their own, once, and the baseline that reads them back.
 *
 * One table per name count (`certstate_bench_scale_<count>`, never a test's
 * table), in postgresStorage's schema. A marker table records which dataset
 * (the manifest's `mintedAt`) and how many names a table holds, written only
 * once the seeding committed: a later run reuses the table as it is (a second,
 * not minutes), and a run cut short leaves no marker, so the next one seeds
 * afresh. Rows go in by batched multi-row INSERTs of `unnest`ed arrays
 * (no COPY: that needs a package the project does not otherwise use), then
 * VACUUM ANALYZE, so that the first measured read does not set hint bits.
 */
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { migratePostgres } from '../../src/adapters/storage/postgres.js';
import { keys } from '../../src/storage-keys.js';
import { nameOf, type Dataset } from '../lib/dataset.js';
import { patchedUnit, template, type Template } from '../lib/patch-mint.js';

/** Where the bench's PostgreSQL is (trust auth, database `test`, as the tests use it). */
export const BENCH_POSTGRES_URL =
  process.env.CERTSTATE_BENCH_POSTGRES_URL ?? process.env.CERTSTATE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** The bench's own table for `count` names (a lower-case identifier, as postgresStorage requires). */
export const benchTable = (count: number) => `certstate_bench_scale_${count}`;

const MARKERS = 'certstate_bench_scale_datasets';
/** What the seeding writes (2: patched units that do not parse are re-patched, see `repaired`); a table marked otherwise is seeded again. */
const SEED_FORMAT = 2;
/** Rows per INSERT: ~9 MB of values, one round trip. */
const BATCH = 2000;

function newPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {});
  return pool;
}

/**
 * Make `benchTable(count)` hold exactly the dataset's first `count` units
 * under `certificates/` (nothing else there), seeding it unless the marker
 * says it already does. Resolves with the table's name.
 */
export async function seedPostgres(dataset: Dataset, count: number, log: (line: string) => void, url = BENCH_POSTGRES_URL): Promise<string> {
  const table = benchTable(count);
  const pool = newPool(url);
  try {
    await migratePostgres(pool, { table, timeoutMs: 30_000 });
    await pool.query(`CREATE TABLE IF NOT EXISTS ${MARKERS} (tbl text PRIMARY KEY, minted_at bigint NOT NULL, count integer NOT NULL)`);
    await pool.query(`ALTER TABLE ${MARKERS} ADD COLUMN IF NOT EXISTS format integer NOT NULL DEFAULT 1`);
    const marker = await pool.query<{ minted_at: string; count: number; format: number }>(`SELECT minted_at, count, format FROM ${MARKERS} WHERE tbl = $1`, [table]);
    const m = marker.rows[0];
    if (m && Number(m.minted_at) === dataset.mintedAt && m.count === count && m.format === SEED_FORMAT) {
      const held = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM "${table}" WHERE key LIKE 'certificates/%'`);
      if (Number(held.rows[0]!.n) === count) {
        log(`postgres: ${table} already holds this dataset's ${count} names`);
        return table;
      }
    }
    const started = Date.now();
    log(`postgres: seeding ${count} names into ${table}…`);
    await pool.query(`DELETE FROM ${MARKERS} WHERE tbl = $1`, [table]);
    await pool.query(`TRUNCATE "${table}", "${table}_locks", "${table}_index"`);
    for (let i = 0; i < count; i += BATCH) {
      const names = Array.from({ length: Math.min(BATCH, count - i) }, (_, j) => nameOf(i + j));
      // The files read 64 at a time; the values go as text (half the bytes of bytea's hex) and are stored as their UTF-8.
      const values: string[] = new Array(names.length);
      let next = 0;
      const worker = async () => {
        while (next < names.length) {
          const j = next++;
          const unit = await readFile(dataset.unitPath(names[j]!), 'utf8');
          values[j] = unit.includes('"meta"') ? unit : await repaired(dataset, names[j]!, i + j, count);
        }
      };
      await Promise.all(Array.from({ length: 64 }, worker));
      await pool.query(
        `INSERT INTO "${table}" (key, value) SELECT k, convert_to(v, 'UTF8') FROM unnest($1::text[], $2::text[]) AS u(k, v)`,
        [names.map((name) => keys.certificate(name)), values],
      );
      if ((i / BATCH) % 50 === 49) log(`postgres: ${i + names.length} of ${count} seeded (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
    await pool.query(`VACUUM ANALYZE "${table}"`);
    await pool.query(`INSERT INTO ${MARKERS} (tbl, minted_at, count, format) VALUES ($1, $2, $3, $4)`, [table, dataset.mintedAt, count, SEED_FORMAT]);
    log(`postgres: seeded ${count} names in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return table;
  } finally {
    await pool.end();
  }
}

/**
 * The baseline: a plain `pg` loader. Every certificate row, by keyset pages
 * of 1,000 (one query each, the value as pg returns a `bytea`: a Buffer),
 * decoded and JSON.parse'd into a Map. `onRow` sees each row's index in key
 * order (the first and the last name's times).
 */
export async function plainPgLoad(url: string, table: string, into: Map<string, unknown> | undefined, onRow?: (i: number) => void): Promise<number> {
  const pool = newPool(url);
  try {
    let after = '';
    let n = 0;
    for (;;) {
      const { rows } = await pool.query<{ key: string; value: Buffer }>(
        `SELECT key, value FROM "${table}" WHERE key LIKE 'certificates/%' AND key > $1 ORDER BY key LIMIT 1000`,
        [after],
      );
      for (const row of rows) {
        const unit = JSON.parse(row.value.toString('utf8')) as unknown;
        into?.set(row.key, unit);
        onRow?.(n++);
      }
      if (rows.length < 1000) return n;
      after = rows[rows.length - 1]!.key;
    }
  } finally {
    await pool.end();
  }
}

/** The newest complete generation of the engine's start-up index in `table` (postgres-index.ts), 0 when none. */
export async function indexGeneration(url: string, table: string): Promise<number> {
  const pool = newPool(url);
  try {
    const { rows } = await pool.query<{ gen: string | null }>(`SELECT max(gen)::text AS gen FROM "${table}_index" WHERE seq = 0`);
    return Number(rows[0]?.gen ?? 0);
  } catch {
    return 0; // no index table yet
  } finally {
    await pool.end();
  }
}

/** Remove the engine's start-up index from `table`: the next engine start is a cold one. */
export async function clearIndex(url: string, table: string): Promise<void> {
  const pool = newPool(url);
  try {
    await pool.query(`DELETE FROM "${table}_index"`).catch(() => undefined);
  } finally {
    await pool.end();
  }
}

const templates = new Map<string, Promise<Template>>();

/**
 * A unit of the shared dataset that carries no metadata: a patched copy whose certificate does not
 * parse (the patch once broke a serial whose top bit was set: a leading zero byte made non-minimal).
 * Patched again here, from the same template (a minted name of the same length), as the fixed
 * patch-mint.ts writes it; the shared dataset itself is left as it is.
 */
async function repaired(dataset: Dataset, name: string, i: number, count: number): Promise<string> {
  let source = nameOf(0);
  for (let first = 10; first < count && nameOf(first).length <= name.length; first *= 10) source = nameOf(first);
  if (source.length !== name.length) throw new Error(`no template of the length of ${name}`);
  let t = templates.get(source);
  if (!t) templates.set(source, (t = template(dataset.dir, source)));
  return patchedUnit(await t, name, i);
}

/**
 * Start-up through a storage's bulk read (`Storage.entries`): every stored
 * certificate comes from the listing, none from a `load` per name; names it
 * did not find (nothing stored) are read name by name; a failure record
 * listed still holds; a bulk read that fails part way leaves the rest to
 * per-name reads.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileStorage } from '../src/adapters/storage/file.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { keysetPages, nextAfter, scanEntries } from '../src/adapters/storage/bulk-pages.js';
import { keys } from '../src/storage-keys.js';
import type { Storage } from '../src/types.js';
import { scriptedIssuer, seededStorage } from './helpers/scripted-issuer.js';
import { countingStorage } from './helpers/storage-wrap.js';

const T0 = Math.floor(Date.now() / 1000) * 1000;
const namesOf = (n: number) => Array.from({ length: n }, (_, i) => `n${i}.localhost`);


/** `countingStorage` over `inner`, with the bulk read delegated (optionally failing after `failAfter` batches). */
function bulkCounting(inner: Storage, failAfter = Infinity) {
  const counted = countingStorage(inner);
  let bulkReads = 0;
  const entries = async function* (prefix: string) {
    bulkReads++;
    let n = 0;
    for await (const batch of inner.entries!(prefix)) {
      if (n++ >= failAfter) throw new Error('bulk read failed part way');
      yield batch;
    }
  };
  return Object.assign(counted, { entries, bulkReads: () => bulkReads });
}

describe('start-up through a bulk read', () => {
  it('reads every stored certificate from the listing and none by load; names with nothing stored are read and obtained; a listed failure record holds', async () => {
    const clock = new ManualClock(T0);
    const stored = namesOf(300);
    const inner = await seededStorage(stored, clock);
    // One stored name failed last time (another process recorded a backoff).
    const failing = stored[7]!;
    await inner.store(keys.failure(failing), JSON.stringify({ version: 1, attempts: 2, nextAttemptAt: T0 + 3_600_000, lastError: { type: 'IssuanceError', message: 'earlier', at: T0 } }));
    const storage = bulkCounting(inner);
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const fresh = ['fresh0.localhost', 'fresh1.localhost'];
    const engine = createCertEngine({ storage, issuers: [issuer], names: [...stored, ...fresh], clock, maxLiveActors: 5 });
    await engine.start();
    try {
      assert.equal(storage.bulkReads(), 1, 'one bulk read');
      const certLoads = [...storage.loads].filter(([k]) => k.startsWith('certificates/'));
      assert.deepEqual(certLoads.map(([k]) => k).sort(), fresh.map((n) => keys.certificate(n)).sort(), 'only the names not stored are loaded');
      for (const name of fresh) await engine.getCertificate(name);
      assert.equal(issuer.calls, 2, 'the two fresh names obtained; no stored name ordered');
      const summary = engine.statusSummary({ expiry: false });
      assert.equal(summary.byState.valid, 302, JSON.stringify(summary.byState));
      // (Its certificate is usable and not due: valid, with the failures counted.)
      assert.equal(engine.statusOf(failing)?.attempts, 2, 'the failure record listed is read');
      assert.ok(engine.stats.sleeping > 250, 'names beyond maxLiveActors sleep');
    } finally {
      await engine.stop();
    }
  });

  it('a bulk read that fails part way: what it handed over stays, the rest is read name by name', async () => {
    const clock = new ManualClock(T0);
    const stored = namesOf(600);
    const inner = await seededStorage(stored, clock);
    const storage = bulkCounting(inner, 1); // one batch (256 values), then an error
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: stored, clock, maxLiveActors: 5 });
    await engine.start();
    try {
      const certLoads = [...storage.loads].filter(([k]) => k.startsWith('certificates/')).length;
      assert.equal(certLoads, 600 - 256, 'the names of the first batch are not read again');
      assert.equal(engine.statusSummary({ expiry: false }).byState.valid, 600);
    } finally {
      await engine.stop();
    }
  });
});

describe('file storage: a value that is not valid UTF-8 in the listing', () => {
  it('is left out of its batch and read (as absent) by name; the listing goes on for every other name', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'certstate-bulk-'));
    try {
      const clock = new ManualClock(T0);
      const stored = namesOf(100);
      const inner = await seededStorage(stored, clock, fileStorage(root));
      const broken = stored[42]!;
      // Certificates are written fenced: the value read is the newest file of the key's versions directory.
      const versions = `${path.join(root, ...keys.certificate(broken).split('/'))}~v`;
      const files = await readdir(versions);
      assert.equal(files.length, 1, `one version: ${files}`);
      await writeFile(path.join(versions, files[0]!), Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
      const storage = bulkCounting(inner);
      const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
      const engine = createCertEngine({ storage, issuers: [issuer], names: stored, clock, maxLiveActors: 5 });
      await engine.start();
      try {
        assert.equal(storage.bulkReads(), 1, 'one bulk read');
        const certLoads = [...storage.loads].filter(([k]) => k.startsWith('certificates/')).map(([k]) => k);
        assert.deepEqual(certLoads, [keys.certificate(broken)], 'only the undecodable value is read again, by name');
        await engine.getCertificate(broken);
        assert.equal(issuer.calls, 1, 'the undecodable certificate counts as absent: obtained once');
        assert.equal(engine.statusSummary({ expiry: false }).byState.valid, 100);
      } finally {
        await engine.stop();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe("file storage's bulk read: bytes read per batch, strings made as they are handed over", () => {
  it('every value whole at any size (a batch larger than its buffer, values of their own, keys with fenced versions), with its version; at most 16 handed over at a time', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'certstate-bulk-'));
    try {
      const storage = fileStorage(root);
      // 700 values: small, ~5 KB (as stored certificates), and some of 40–100 KB, so that a batch of 256
      // does not fit its first buffer (2 MiB): those values get buffers of their own, the next batch a larger buffer.
      const expected = new Map<string, string>();
      const sizes = [10, 5_000, 5_100, 40_000, 100_000];
      for (let i = 0; i < 700; i += 50) {
        await Promise.all(
          Array.from({ length: 50 }, (_, j) => {
            const n = i + j;
            const size = sizes[n % sizes.length]!;
            const value = `${n}:${'é€x'.repeat(size / 3)}`;
            expected.set(`certificates/n${n}.json`, value);
            return storage.store(`certificates/n${n}.json`, value);
          }),
        );
      }
      // A fenced write: the key has a versions directory, read through `load`.
      const lock = await storage.lock('locks/issue/bulk', 10_000);
      await storage.store('certificates/fenced.json', 'fenced value', { fence: { lockKey: lock.key, token: lock.fencingToken } });
      expected.set('certificates/fenced.json', 'fenced value');
      await lock.release();
      const store = storage.startupIndex!;
      const seen = new Map<string, string>();
      let largest = 0;
      for await (const batch of storage.entries!('certificates/')) {
        largest = Math.max(largest, batch.length);
        for (const [key, value, version] of batch) {
          assert.ok(!seen.has(key), `${key} handed over twice`);
          seen.set(key, value);
          assert.equal(version, (await store.loadVersioned(key))?.version, `${key}: the version of the file read`);
        }
      }
      assert.equal(seen.size, expected.size);
      for (const [key, value] of expected) assert.ok(seen.get(key) === value, `${key} read back whole (${seen.get(key)?.length} of ${value.length} characters)`);
      assert.ok(largest <= 16, `at most 16 values handed over at a time (${largest})`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('bulk reads page by page (PostgreSQL keyset pages, Redis SCAN pages)', () => {
  it('keyset pages: every row once, in bounded pages, past several pages', async () => {
    const rows = Array.from({ length: 2500 }, (_, i) => [`certificates/k${String(i).padStart(5, '0')}`, `v${i}`] as const);
    const asked: string[] = [];
    const page = async (after: string, limit: number) => {
      asked.push(after);
      const found = rows.filter(([key]) => key > after).slice(0, limit);
      return { rows: found, next: nextAfter(found.map(([key]) => key), limit) };
    };
    const seen: string[] = [];
    for await (const batch of keysetPages(page)) {
      assert.ok(batch.length <= 1000);
      for (const [key, value] of batch) {
        seen.push(key);
        assert.equal(value, `v${Number(key.slice(-5))}`);
      }
    }
    assert.deepEqual(seen, rows.map(([key]) => key));
    assert.equal(asked.length, 3, 'three pages');
  });

  it('keyset pages: the next page is asked for before this one is handed over, and never more than one ahead', async () => {
    const rows = Array.from({ length: 3500 }, (_, i) => [`certificates/k${String(i).padStart(5, '0')}`, `v${i}`] as const);
    let asked = 0;
    let answered = 0;
    const page = async (after: string, limit: number) => {
      asked++;
      await new Promise((resolve) => setImmediate(resolve));
      answered++;
      const found = rows.filter(([key]) => key > after).slice(0, limit);
      return { rows: found, next: nextAfter(found.map(([key]) => key), limit) };
    };
    const atYield: number[] = [];
    for await (const _batch of keysetPages(page)) {
      atYield.push(asked - answered);
      // The caller is slow: the page asked ahead is answered meanwhile, and no other is asked.
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.ok(asked - answered === 0, 'nothing else in flight while the caller works, once the page ahead is in');
    }
    assert.deepEqual(atYield, [1, 1, 1, 0], 'a page in flight at each hand-over but the last (after a short page)');
    assert.equal(asked, 4);
  });

  it('SCAN pages: a key SCAN returns twice is yielded once; a key gone before its read is skipped', async () => {
    const pages: Record<string, [string, string[]]> = { '0': ['7', ['p:a', 'p:b']], '7': ['9', ['p:b', 'p:c']], '9': ['0', ['p:d']] };
    const values: Record<string, string | null> = { 'p:a': 'A', 'p:b': 'B', 'p:c': null, 'p:d': 'D' };
    const seen: Array<readonly [string, string]> = [];
    for await (const batch of scanEntries(async (cursor) => pages[cursor]!, async (ks) => ks.map((k) => values[k]!), 'p:')) seen.push(...batch);
    assert.deepEqual(seen, [['a', 'A'], ['b', 'B'], ['d', 'D']]);
  });
});

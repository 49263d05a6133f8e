/**
 * The attempt under storage faults, in one process (fast; the multi-process
 * versions are in cluster-faults.test.ts): the lease keeper, and an issued
 * certificate that the storage refuses for longer than the attempt can wait.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { realClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { keepLease } from '../src/engine/lease.js';
import { parseStoredCertificate } from '../src/engine/stored.js';
import { LockLostError, StorageError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { Issuer, StorageLock } from '../src/types.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const silent = pino({ level: 'silent' });

/** The engine's clock does not keep the process alive (its timers are unref'd): a test waiting only on it must. */
function keepingAlive<T>(body: () => Promise<T>): () => Promise<T> {
  return async () => {
    const alive = setInterval(() => {}, 1000);
    try {
      return await body();
    } finally {
      clearInterval(alive);
    }
  };
}

/** A lock whose renewals fail while `failing` is true (as during a storage blip). */
function flakyLock() {
  const state = { failing: false, renewals: 0, failures: 0 };
  const lock: StorageLock = {
    key: 'locks/issue/example.com',
    fencingToken: 1,
    async renew() {
      state.renewals++;
      if (state.failing) {
        state.failures++;
        throw new StorageError('connection reset');
      }
    },
    async release() {},
  };
  return { lock, state };
}

describe('lease keeper', () => {
  it('a renewal that fails for a moment is retried within the lease: the lease is kept', { timeout: 20_000 }, keepingAlive(async () => {
    const { lock, state } = flakyLock();
    const lease = keepLease(lock, { ttlMs: 600, clock: realClock(), logger: silent, signal: new AbortController().signal });
    try {
      await delay(150);
      state.failing = true; // covers the renewal at 200 ms and its first retries
      await delay(250);
      state.failing = false;
      await delay(900); // past the lease, twice
      assert.ok(state.failures >= 1, 'a renewal failed');
      assert.equal(lease.signal.aborted, false, 'the lease was given up after a blip shorter than the lease');
      assert.equal(lease.lost, false);
      lease.assertHeld();
    } finally {
      lease.stop();
    }
  }));

  it('a lease that cannot be renewed before its end aborts the attempt (LockLostError) before the storage could hand it on', { timeout: 20_000 }, keepingAlive(async () => {
    const { lock, state } = flakyLock();
    state.failing = true;
    const started = performance.now();
    const lease = keepLease(lock, { ttlMs: 400, clock: realClock(), logger: silent, signal: new AbortController().signal });
    try {
      const reason = await new Promise<unknown>((resolve) => lease.signal.addEventListener('abort', () => resolve(lease.signal.reason), { once: true }));
      const after = performance.now() - started;
      assert.ok(reason instanceof LockLostError);
      assert.ok(lease.lost);
      assert.ok(after < 400, `aborted ${after.toFixed(0)} ms after taking a 400 ms lease: before it ended`);
      assert.ok(state.failures >= 2, 'retried before giving up');
      assert.throws(() => lease.assertHeld(), LockLostError);
    } finally {
      lease.stop();
    }
  }));

  it('the storage saying the lock is someone else\'s aborts at once', { timeout: 20_000 }, keepingAlive(async () => {
    const lock: StorageLock = {
      key: 'locks/issue/example.com',
      fencingToken: 1,
      renew: async () => {
        throw new LockLostError('locks/issue/example.com');
      },
      release: async () => {},
    };
    const lease = keepLease(lock, { ttlMs: 3000, clock: realClock(), logger: silent, signal: new AbortController().signal });
    try {
      await new Promise((resolve) => lease.signal.addEventListener('abort', resolve, { once: true }));
      assert.ok(lease.lost);
    } finally {
      lease.stop();
    }
  }));
});

describe('an issued certificate the storage refuses for longer than the attempt can wait', () => {
  it('is served from memory at once and stored as soon as the storage takes writes again; one issuance', { timeout: 20_000 }, keepingAlive(async () => {
    const inner = memoryStorage();
    let down = true;
    const storage = interceptStorage(inner, {
      store: (key, value, options) => (down && key.startsWith('certificates/') ? Promise.reject(new StorageError('storage unreachable')) : inner.store(key, value, options)),
    });
    const ca = localCaIssuer({ keyBits: 2048 });
    let issued = 0;
    const issuer: Issuer = { id: ca.id, issue: (request, context) => ((issued += 1), ca.issue(request, context)) };
    const name = 'pending.example.com';
    // A lease of 1.5 s: long enough that a loaded machine (RSA key generation in the attempt) keeps it, short enough that the store outlasts it.
    const engine = createCertEngine({ storage, issuers: [issuer], names: [name], lockTtlMs: 1500, timing: { storageRetryMs: 100 }, logger: silent });
    try {
      await engine.start();
      const served = await engine.getCertificate(name);
      assert.equal(issued, 1);
      assert.equal(await inner.load(keys.certificate(name)), undefined, 'not stored while the storage refuses writes');
      down = false;
      const deadline = Date.now() + 5000;
      let stored: string | undefined;
      while (Date.now() < deadline && (stored = await inner.load(keys.certificate(name))) === undefined) await delay(20);
      assert.ok(stored, 'stored once the storage took writes again');
      assert.equal(parseStoredCertificate(keys.certificate(name), stored).meta.fingerprint, served.meta.fingerprint, 'the certificate served is the one stored');
      assert.equal(issued, 1, 'no second issuance');
      assert.equal((await engine.getCertificate(name)).meta.fingerprint, served.meta.fingerprint);
    } finally {
      await engine.stop();
    }
  }));
});

/**
 * The issuer's replay-nonce pool (src/adapters/issuers/acme-nonces.ts):
 * newest first, never one older than its age limit, bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NoncePool } from '../src/adapters/issuers/acme-nonces.js';

describe('NoncePool', () => {
  it('gives the newest nonce first, each once', () => {
    const pool = new NoncePool({ maxAgeMs: 1000, max: 8, now: () => 0 });
    pool.put('a');
    pool.put('b');
    assert.equal(pool.take(), 'b');
    assert.equal(pool.take(), 'a');
    assert.equal(pool.take(), undefined);
  });

  it('never gives a nonce older than maxAgeMs (and drops every older one)', () => {
    let now = 0;
    const pool = new NoncePool({ maxAgeMs: 1000, max: 8, now: () => now });
    pool.put('old');
    now = 500;
    pool.put('young');
    now = 1200; // 'old' is 1200 ms old, 'young' 700
    assert.equal(pool.take(), 'young');
    assert.equal(pool.take(), undefined, 'too old: asked newNonce instead');
    assert.equal(pool.size, 0);
    pool.put('fresh');
    now = 2200; // exactly maxAgeMs old: still taken
    assert.equal(pool.take(), 'fresh');
  });

  it('keeps at most max nonces, dropping the oldest', () => {
    const pool = new NoncePool({ maxAgeMs: 1000, max: 2, now: () => 0 });
    for (const n of ['a', 'b', 'c']) pool.put(n);
    assert.equal(pool.size, 2);
    assert.equal(pool.take(), 'c');
    assert.equal(pool.take(), 'b');
    assert.equal(pool.take(), undefined);
  });
});

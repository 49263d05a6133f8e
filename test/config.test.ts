/**
 * Fail fast: a mistake in the options of `createCertEngine` is a
 * `ConfigError` at construction (an unknown key names the nearest known
 * one), a storage whose driver cannot load rejects `start()`, and the
 * README's option table is the schema's.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { acmeIssuer, ConfigError, createCertEngine, localCaIssuer, memoryStorage, type AcmeIssuerOptions, type CertEngineOptions } from '../src/index.js';
import { redisStorage } from '../src/adapters/storage/redis.js';
import { postgresStorage } from '../src/adapters/storage/postgres.js';
import { ENGINE_OPTIONS } from '../src/engine/config.js';

const issuer = localCaIssuer();
const base = (): CertEngineOptions => ({ storage: memoryStorage(), issuers: [issuer] });

/** createCertEngine with options JavaScript would accept; returns the ConfigError's message. */
function configError(options: unknown): string {
  let thrown: unknown;
  try {
    createCertEngine(options as CertEngineOptions);
  } catch (error) {
    thrown = error;
  }
  assert.ok(thrown instanceof ConfigError, `expected a ConfigError, got ${String(thrown)}`);
  assert.equal(thrown.code, 'ERR_CONFIG');
  return thrown.message;
}

describe('createCertEngine checks its options', () => {
  it('an unknown key names the nearest known option', () => {
    assert.match(configError({ ...base(), name: ['a.localhost'] }), /unknown option `name`; did you mean `names`\?/);
    assert.match(configError({ ...base(), handshakeTimeoutMs: 5000 }), /did you mean `handshakeTimeout`\?/);
    assert.match(configError({ ...base(), Storage: memoryStorage() }), /did you mean `storage`\?/);
    assert.match(configError({ ...base(), timing: { backoffInitalMs: 1000 } }), /`timing`: unknown option `backoffInitalMs`; did you mean `backoffInitialMs`\?/);
    assert.match(configError({ ...base(), onDemand: { decide: () => true, rateLimit: { burts: 3 } } }), /did you mean `burst`\?/);
    // Nothing near: the known options are listed instead.
    assert.match(configError({ ...base(), frobnicate: true }), /unknown option `frobnicate`; known options: storage, issuers, names/);
  });

  it('a value of the wrong shape says what was expected', () => {
    assert.match(configError({ ...base(), handshakeTimeout: '30s' }), /`handshakeTimeout` must be a positive number of ms, got "30s"/);
    assert.match(configError({ ...base(), handshakeTimeout: -1 }), /`handshakeTimeout` must be a positive number of ms/);
    assert.match(configError({ ...base(), maxWaiters: 1.5 }), /`maxWaiters` must be a whole number ≥ 1, got 1.5/);
    assert.match(configError({ ...base(), names: 'a.localhost' }), /`names` must be an array of names/);
    assert.match(configError({ ...base(), serveExpired: 'yes' }), /`serveExpired` must be true or false/);
    assert.match(configError({ ...base(), storage: {} }), /`storage` must be an object with load\(\)/);
    assert.match(configError({ ...base(), timing: { backoffJitter: 2 } }), /`timing.backoffJitter` must be a number in \[0, 1\)/);
    assert.match(configError({ ...base(), onDemand: { ask: 'ftp://decide.example/' } }), /`onDemand.ask` must be an http:\/\/ or https:\/\/ URL/);
    assert.match(configError({ ...base(), logger: console }), /`logger` must be an object with info\(\), warn\(\), error\(\), debug\(\), child\(\)/);
  });

  it('issuers: required, each an issuer, ids unique', () => {
    assert.match(configError(undefined), /needs an options object/);
    assert.match(configError({ storage: memoryStorage() }), /`issuers` must be a non-empty array of issuers/);
    assert.match(configError({ ...base(), issuers: [] }), /`issuers` must be a non-empty array/);
    assert.match(configError({ ...base(), issuers: [{ id: 'x' }] }), /`issuers\[0\]` must be an issuer/);
    assert.match(configError({ ...base(), issuers: [issuer, issuer] }), /two issuers with the id "local-ca:default"/);
  });

  it('defaultName must be one of the managed names', () => {
    assert.match(configError({ ...base(), names: ['a.localhost'], defaultName: 'b.localhost' }), /`defaultName` "b.localhost" must be one of `names`/);
    createCertEngine({ ...base(), names: ['a.localhost'], defaultName: 'A.localhost.' });
  });

  it('accepts every documented option', () => {
    createCertEngine({
      ...base(),
      names: ['a.localhost'],
      defaultName: 'a.localhost',
      onDemand: { decide: () => true, ask: 'http://127.0.0.1:9/ask', askTimeoutMs: 1000, rateLimit: { burst: 5, refillPerSecond: 0.5 } },
      handshakeTimeout: 1000,
      maxWaitersPerName: 10,
      maxWaiters: 100,
      serveExpired: true,
      inspect: () => {},
      random: Math.random,
      timing: { backoffInitialMs: 1000, backoffJitter: 0, renewRatio: 0.5 },
      lockTtlMs: 1000,
      stopTimeoutMs: 1000,
      cacheCapacity: 5,
      maxLiveActors: 0,
    });
  });
});

describe('the factories check their option keys too', () => {
  it('acmeIssuer, localCaIssuer, redisStorage, postgresStorage name the nearest option', () => {
    const acme = { directoryUrl: 'https://acme.example/directory', agreeToTerms: true };
    assert.throws(() => acmeIssuer({ ...acme, directoryURL: 'x' } as AcmeIssuerOptions), /acmeIssuer: unknown option `directoryURL`; did you mean `directoryUrl`\?/);
    assert.throws(() => acmeIssuer({ ...acme, challenge: ['dns-01'] } as AcmeIssuerOptions), /did you mean `challenges`\?/);
    assert.throws(() => localCaIssuer({ keybits: 2048 } as never), /localCaIssuer: unknown option `keybits`; did you mean `keyBits`\?/);
    assert.throws(() => redisStorage({ uri: 'redis://127.0.0.1' } as never), /redisStorage: unknown option `uri`; did you mean `url`\?/);
    assert.throws(() => postgresStorage({ connectionstring: 'postgres://x' } as never), /did you mean `connectionString`\?/);
    for (const make of [() => acmeIssuer({ ...acme, directoryURL: 'x' } as AcmeIssuerOptions), () => redisStorage({ uri: 'x' } as never)]) {
      assert.throws(make, ConfigError);
    }
  });
});

describe('start() loads what the storage needs', () => {
  it('rejects with the storage driver\'s ConfigError, and can start once the storage is fixed', async () => {
    let driverMissing = true;
    const storage = Object.assign(memoryStorage(), {
      prepare: async () => {
        if (driverMissing) throw new ConfigError('redisStorage({ url }) needs the optional peer dependency ioredis: npm install ioredis');
      },
    });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['prepared.localhost'] });
    await assert.rejects(engine.start(), (e: unknown) => e instanceof ConfigError && /npm install ioredis/.test(e.message));
    assert.equal(engine.status().length, 0, 'no name was started');
    driverMissing = false;
    await engine.start();
    assert.deepEqual((await engine.getCertificate('prepared.localhost')).meta.names, ['prepared.localhost']);
    await engine.stop();
  });

  it('awaits each issuer\'s prepare() before any name is read, so no attempt holds a lock while a client library loads', async () => {
    const order: string[] = [];
    let release!: () => void;
    const loaded = new Promise<void>((resolve) => (release = resolve));
    const storage = memoryStorage();
    const watched = Object.assign(Object.create(storage) as typeof storage, {
      load: (key: string) => (order.push(`load ${key}`), storage.load(key)),
      lock: (...args: Parameters<typeof storage.lock>) => (order.push('lock'), storage.lock(...args)),
    });
    const slowIssuer = { ...localCaIssuer(), id: 'slow', prepare: () => (order.push('prepare'), loaded) };
    const engine = createCertEngine({ storage: watched, issuers: [slowIssuer], names: ['slow.localhost'] });
    const started = engine.start();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(order, ['prepare'], 'nothing is read or locked while the issuer prepares');
    release();
    await started;
    await engine.getCertificate('slow.localhost');
    assert.ok(order.indexOf('lock') > 0);
    await engine.stop();
  });
});

describe('the README documents exactly the options the schema checks', () => {
  it('one row per option, in the same order, with the same default', async () => {
    const readme = await readFile(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const section = /### Options of `createCertEngine`\n([\s\S]*?)\n###? /.exec(readme)?.[1];
    assert.ok(section, 'README has the options table');
    const rows = section
      .split('\n')
      .filter((line) => /^\| `/.test(line))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    assert.deepEqual(
      rows.map((cells) => cells[1]),
      Object.keys(ENGINE_OPTIONS).map((key) => `\`${key}\``),
    );
    for (const cells of rows) {
      const key = cells[1]!.slice(1, -1) as keyof typeof ENGINE_OPTIONS;
      assert.equal(cells[2], ENGINE_OPTIONS[key].default, `default of ${key}`);
    }
  });
});

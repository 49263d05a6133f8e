/**
 * The engine's own lifecycle, undici-style: `start()`/`stop()` memoised,
 * `stop()` during `start()` closing what start opened, one abort signal for
 * everything the engine started (ARI and `ask` requests, queued reads),
 * callbacks that cannot throw out of the engine, and a storage resync that
 * neither evicts hot key material nor re-adopts what did not change.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { InspectionEvent } from 'xstate';
import { actorIdOf } from '../src/admin/inspector.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import type { StorageChange } from '../src/adapters/storage/notify.js';
import { ManualClock } from '../src/clock.js';
import { ARI_DEFAULT_RECHECK_MS } from '../src/engine/ari.js';
import { createCertEngine } from '../src/engine/engine.js';
import { serializeStoredCertificate } from '../src/engine/stored.js';
import { WakeQueue } from '../src/engine/wake-queue.js';
import { EngineStoppedError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { CertificateMeta, IssueContext, Issuer, RenewalInfo, Storage } from '../src/types.js';
import { installTestCa, scriptedIssuer, seededStorage } from './helpers/scripted-issuer.js';
import { countingStorage, interceptStorage } from './helpers/storage-wrap.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 2, 1);
const tick = () => new Promise<void>((r) => setImmediate(r));
async function ticks(n = 10) {
  for (let i = 0; i < n; i++) await tick();
}
async function until(what: string, predicate: () => boolean) {
  for (let i = 0; i < 2000 && !predicate(); i++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(predicate(), `timed out waiting for ${what}`);
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

async function testStorage(): Promise<Storage> {
  const storage = memoryStorage();
  await installTestCa(storage);
  return storage;
}


/** A storage that can report changes, as Redis and PostgreSQL storages do. */
function watchable(inner: Storage, watch: (listener: (change: StorageChange) => void) => Promise<() => Promise<void>>) {
  return Object.assign(interceptStorage(inner, {}), { watch: (_prefix: string, listener: (change: StorageChange) => void) => watch(listener) });
}

describe('start and stop', () => {
  it('start() twice is one start; stop() twice is one stop, the second waits for the first; start() after stop() is EngineStoppedError', async () => {
    const unwatching = deferred();
    let unwatched = false;
    const storage = watchable(await testStorage(), async () => async () => {
      await unwatching.promise;
      unwatched = true;
    });
    const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['twice.localhost'] });
    await Promise.all([engine.start(), engine.start()]);
    await engine.getCertificate('twice.localhost');
    assert.equal(issuer.calls, 1, 'one start: the name was read and obtained once');

    const order: string[] = [];
    const first = engine.stop().then(() => order.push('first'));
    const second = engine.stop().then(() => order.push('second'));
    await ticks();
    assert.deepEqual(order, [], 'neither stop is done while the first still closes the watch');
    unwatching.resolve();
    await Promise.all([first, second]);
    assert.ok(unwatched, 'the watch was closed');
    assert.deepEqual(order, ['first', 'second'], 'the second stop resolved once the first was done');
    await assert.rejects(engine.start(), EngineStoppedError);
  });

  it('stop() during start() closes the storage watch start was opening', async () => {
    const connecting = deferred();
    let listening = false;
    let unwatchCalls = 0;
    const storage = watchable(await testStorage(), async () => {
      await connecting.promise;
      listening = true;
      return async () => {
        unwatchCalls++;
        listening = false;
      };
    });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: ['early.localhost'] });
    const starting = engine.start();
    await ticks();
    const stopping = engine.stop();
    connecting.resolve(); // the watch connects after stop began
    await stopping;
    await starting;
    assert.equal(unwatchCalls, 1, 'the late watch was closed');
    assert.equal(listening, false, 'nothing listens after stop');
  });
});

describe('one abort signal for everything the engine started', () => {
  it('an ARI request in flight is aborted by stop()', { timeout: 30_000 }, async () => {
    let seen: AbortSignal | undefined;
    const base = scriptedIssuer({ mode: { kind: 'succeed' } });
    const issuer: Issuer = {
      id: base.id,
      issue: (r, c) => base.issue(r, c),
      // A CA that never answers: only the engine's abort can end this request before its 30 s deadline.
      renewalInfo: (_certificate: CertificateMeta, context: IssueContext) =>
        new Promise<RenewalInfo | undefined>((_resolve, reject) => {
          seen = context.signal;
          context.signal.addEventListener('abort', () => reject(context.signal.reason));
        }),
    };
    // stop() waits for effects in flight up to stopTimeoutMs: far longer than this test may take.
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['ari.localhost'], stopTimeoutMs: 600_000 });
    await engine.start();
    await engine.getCertificate('ari.localhost');
    await until('the ARI request', () => seen !== undefined);
    assert.equal(seen!.aborted, false);
    await engine.stop();
    assert.equal(seen!.aborted, true, 'stop() aborted the request');
  });

  it('an ARI request whose issuer looks at its signal only after stop() sees it aborted', { timeout: 30_000 }, async () => {
    let context: IssueContext | undefined;
    const base = scriptedIssuer({ mode: { kind: 'succeed' } });
    const issuer: Issuer = {
      id: base.id,
      issue: (r, c) => base.issue(r, c),
      // A CA that never answers, and an issuer that does not read the signal while it waits.
      renewalInfo: (_certificate: CertificateMeta, given: IssueContext) => {
        context = given;
        return new Promise<RenewalInfo | undefined>(() => {});
      },
    };
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['ari.localhost'], stopTimeoutMs: 50 });
    await engine.start();
    await engine.getCertificate('ari.localhost');
    await until('the ARI request', () => context !== undefined);
    await engine.stop();
    assert.equal(context!.signal.aborted, true, 'the signal is made aborted: the engine stopped');
    assert.equal(context!.signal, context!.signal, 'one signal per request');
    assert.equal(typeof context!.now(), 'number');
    const { now } = context!;
    assert.equal(typeof now(), 'number', 'now works detached from the context');
  });

  it('an on-demand `ask` request in flight is aborted by stop()', { timeout: 30_000 }, async () => {
    const closed = deferred();
    let asked = 0;
    // An ask endpoint that never answers.
    const server = http.createServer((req) => {
      asked++;
      req.socket.on('close', () => closed.resolve());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const ask = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ask`;
      const engine = createCertEngine({ storage: await testStorage(), issuers: [scriptedIssuer()], onDemand: { ask, askTimeoutMs: 600_000 } });
      await engine.start();
      const handshake = engine.getCertificate('asked.localhost').catch((error: Error) => error);
      await until('the ask request', () => asked === 1);
      await engine.stop();
      await closed.promise; // without the abort, the request would stay open for askTimeoutMs
      assert.ok((await handshake) instanceof Error, 'the handshake is refused, not served');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('reads queued behind the read limit never reach storage after stop()', { timeout: 30_000 }, async () => {
    const clock = new ManualClock(T0);
    const names = Array.from({ length: 150 }, (_, i) => `q${i}.localhost`);
    const inner = await seededStorage(names, clock);
    const gate = deferred();
    let stopped = false;
    let readsAfterStop = 0;
    const storage = interceptStorage(inner, {
      load: async (key, next) => {
        if (stopped) readsAfterStop++;
        await gate.promise;
        return next(key);
      },
    });
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, maxLiveActors: 0 });
    await engine.start({ waitForStorage: false });
    // Handshakes for names not read yet: each an urgent read, queued behind the 64 in flight.
    const handshakes = names.map((name) => engine.getCertificate(name).catch(() => undefined));
    await ticks(20);
    stopped = true;
    const stopping = engine.stop();
    gate.resolve();
    await stopping;
    await Promise.all(handshakes);
    assert.equal(readsAfterStop, 0, 'no queued read started after stop()');
  });
});

describe('callbacks cannot throw out of the engine', () => {
  it('a synchronous throw in renewalInfo is logged, safely, and counts as a failed request (asked again later)', async () => {
    const clock = new ManualClock(T0);
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    let asked = 0;
    const base = scriptedIssuer({ mode: { kind: 'succeed' } });
    const issuer: Issuer = {
      id: base.id,
      issue: (r, c) => base.issue(r, c),
      renewalInfo: () => {
        asked++;
        throw Object.assign(new Error('ARI client broke'), { headers: { authorization: 'Bearer secret-token' } });
      },
    };
    const engine = createCertEngine({ storage: await testStorage(), issuers: [issuer], names: ['throws.localhost'], clock, logger });
    await engine.start();
    try {
      await engine.getCertificate('throws.localhost');
      await ticks();
      assert.equal(asked, 1);
      const line = lines.find((l) => l.includes('renewal information unavailable'));
      assert.ok(line, 'the throw is logged');
      assert.equal(JSON.parse(line).err.message, 'ARI client broke');
      assert.ok(!lines.join('').includes('secret-token'), 'through the safe serializer');
      clock.advance(ARI_DEFAULT_RECHECK_MS);
      await ticks();
      assert.equal(asked, 2, 'asked again at the usual recheck, like any failed request');
      assert.equal((await engine.getCertificate('throws.localhost')).meta.names[0], 'throws.localhost', 'and the name is served');
    } finally {
      await engine.stop();
    }
  });

  it('a wake callback that throws is reported, and the other due wakes still run', () => {
    const clock = new ManualClock(T0);
    const ran: string[] = [];
    const errors: string[] = [];
    const queue = new WakeQueue<'wake' | 'ari'>(
      clock,
      {
        wake: (slot) => {
          ran.push(String(slot));
          if (slot === 1) throw new Error('wake of 1 broke');
        },
        ari: (slot) => ran.push(`ari:${slot}`),
      },
      (error, kind, slot) => errors.push(`${kind}:${slot}:${(error as Error).message}`),
    );
    for (const slot of [0, 1, 2]) queue.schedule('wake', slot, T0 + 1000);
    queue.schedule('ari', 1, T0 + 1000);
    clock.advance(1000);
    assert.deepEqual(ran.sort(), ['0', '1', '2', 'ari:1']);
    assert.deepEqual(errors, ['wake:1:wake of 1 broke']);
    assert.equal(clock.pending, 0);
  });
});

describe('a storage resync', () => {
  it('reads without evicting hot key material, and adopts only the certificate that changed', async () => {
    const clock = new ManualClock(T0);
    const names = Array.from({ length: 20 }, (_, i) => `r${i}.localhost`);
    const inner = await seededStorage(names, clock);
    let feed: ((change: StorageChange) => void) | undefined;
    const counting = countingStorage(inner);
    const storage = watchable(counting, async (listener) => {
      feed = listener;
      return async () => void (feed = undefined);
    });
    const storageChanged: string[] = [];
    const inspect = (event: InspectionEvent) => {
      if (event.type === '@xstate.event' && event.event.type === 'STORAGE_CHANGED') storageChanged.push(actorIdOf(event.actorRef));
    };
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer()], names, clock, cacheCapacity: 10, inspect });
    await engine.start();
    try {
      // The first 10 names are the ones handshakes use (asked last): their material is what the cache holds.
      // (A resync reads in name order, so reads that cached what they read would leave the last 10 instead.)
      for (const name of [...names].reverse()) await engine.getCertificate(name);
      const hot = names.slice(0, 10);
      const hotFingerprints = hot.map((name) => engine.statusOf(name)!.certificate!.fingerprint);
      assert.ok(hotFingerprints.every((fp) => engine._bundle(fp)), 'the hot certificates are in memory');

      // Another process renewed one cold name while the feed was down.
      const changed = names[13]!;
      const other = createCertEngine({ storage: await testStorage(), issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: [changed], clock });
      clock.advance(DAY);
      await other.start();
      const fresh = await other.getCertificate(changed);
      await other.stop();
      await inner.store(keys.certificate(changed), serializeStoredCertificate(fresh, fresh.meta, clock.now()));

      feed!({ type: 'resync' });
      await until('the changed certificate adopted', () => engine.statusOf(changed)!.certificate!.fingerprint === fresh.meta.fingerprint);
      await ticks(20);
      assert.deepEqual(storageChanged, [`cert:${changed}`], 'only the changed certificate was handed to its actor');
      assert.ok(hotFingerprints.every((fp) => engine._bundle(fp)), 'the resync evicted none of the hot material');
      const before = [...counting.loads.values()].reduce((a, b) => a + b, 0);
      for (const name of hot) await engine.getCertificate(name);
      assert.equal([...counting.loads.values()].reduce((a, b) => a + b, 0), before, 'hot names are still served without a storage read');
    } finally {
      await engine.stop();
    }
  });
});

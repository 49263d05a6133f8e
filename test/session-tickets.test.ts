/**
 * Session-ticket keys shared through storage: the schedule (pure), the
 * manager on the engine clock (two managers as two processes, storage
 * trouble, a corrupt set, secrets kept out of logs), and real TLS resumption
 * between two engines sharing one storage.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { SessionTickets, ticketSchedule } from '../src/engine/session-tickets.js';
import { parseTicketKeys, rotate, serializeTicketKeys, viewAt } from '../src/engine/ticket-keys.js';
import { ConfigError, CorruptStorageError, StorageError } from '../src/errors.js';
import { keys } from '../src/storage-keys.js';
import type { Storage } from '../src/types.js';
import { installTestCa } from './helpers/scripted-issuer.js';
import { connectResuming } from './helpers/tls.js';
import { captureLogs } from './helpers/log-capture.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 0, 1);
const schedule = { rotationIntervalMs: 12 * HOUR, overlapMs: 6 * HOUR };
let seq = 0;
/** Distinct, recognisable keys: byte 0 of the name is the key's number. */
const testKey = () => {
  const key = Buffer.alloc(48, 0xab);
  key[0] = ++seq;
  return key;
};
const id = (key: Buffer) => key[0];


/**
 * A stand-in for a tls.Server with Node's internal context: the manager talks
 * to it exactly as to Node (`enableTicketKeyCallback`, `onticketkeycallback`
 * answering arrays), so the answers Node would act on can be read.
 */
function fakeServer() {
  const context: { enabled: boolean; enableTicketKeyCallback(): void; onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => readonly unknown[] } = {
    enabled: false,
    enableTicketKeyCallback() {
      this.enabled = true;
    },
  };
  const server = Object.assign(new EventEmitter(), { _sharedCreds: { context } }) as unknown as tls.Server;
  return {
    server,
    context,
    /** The name of the key a new ticket is encrypted with. */
    encryptingName(): Buffer {
      const answer = context.onticketkeycallback!(Buffer.alloc(16), Buffer.alloc(16), true);
      assert.equal(answer[0], 1);
      return answer[3] as Buffer;
    },
    /** Node's status for a ticket under `name`: 0 unknown (full handshake), 1 resume, 2 resume and renew. */
    decrypt(name: Buffer): number {
      return context.onticketkeycallback!(name, Buffer.alloc(16), false)[0] as number;
    },
  };
}

/** The keys as stored, and every way a key could be spelled in a log line. */
async function storedSecrets(storage: Storage): Promise<string[]> {
  const raw = await storage.load(keys.sessionTicketKeys);
  if (!raw) return [];
  return parseTicketKeys('k', raw).flatMap(({ key }) => [0, 16, 32].flatMap((at) => {
    const part = key.subarray(at, at + 16);
    return [part.toString('hex'), part.toString('base64').slice(0, 20), part.toString('base64url').slice(0, 20)];
  }).concat(key.toString('base64'), key.toString('hex')));
}

describe('session-ticket key schedule (pure)', () => {
  it('a new set: one key encrypting now, the next published one interval ahead and already decrypting', () => {
    const set = rotate([], T0, schedule, testKey);
    assert.deepEqual(set.map((k) => k.activeFrom), [T0, T0 + 12 * HOUR]);
    const view = viewAt(set, T0, schedule);
    assert.equal(view.encrypting, set[0]!.key);
    assert.deepEqual(view.decrypting.map((d) => [id(d.key), d.renew]), [[id(set[0]!.key), false], [id(set[1]!.key), false]]);
    assert.equal(view.nextChangeAt, T0 + 12 * HOUR);
    assert.equal(view.needsRotation, false);
  });

  it('at the rotation the next key encrypts, the old one decrypts (with renewal) for the overlap, then never', () => {
    const [k1, k2] = rotate([], T0, schedule, testKey);
    const at = T0 + 12 * HOUR;
    const view = viewAt([k1!, k2!], at, schedule);
    assert.equal(view.encrypting, k2!.key);
    assert.deepEqual(view.decrypting.map((d) => [id(d.key), d.renew]), [[id(k1!.key), true], [id(k2!.key), false]]);
    assert.equal(view.needsRotation, true, 'no next key yet');
    const rotated = rotate([k1!, k2!], at, schedule, testKey);
    assert.deepEqual(rotated.map((k) => k.activeFrom), [T0, at, at + 12 * HOUR]);
    assert.equal(viewAt(rotated, at, schedule).nextChangeAt, at + 6 * HOUR, 'k1 retires next');
    const justBefore = viewAt(rotated, at + 6 * HOUR - 1, schedule);
    assert.ok(justBefore.decrypting.some((d) => d.key === k1!.key), 'k1 still decrypts 1 ms before its window ends');
    const after = viewAt(rotated, at + 6 * HOUR, schedule);
    assert.ok(!after.decrypting.some((d) => d.key === k1!.key), 'k1 no longer decrypts once its window has passed');
    assert.deepEqual(rotate(rotated, at + 6 * HOUR, schedule, testKey).map((k) => k.activeFrom), [at, at + 12 * HOUR], 'a rotation drops retired keys');
  });

  it('a stale set (every process away for longer than an interval) gets a new encrypting key at once', () => {
    const old = rotate([], T0, schedule, testKey);
    const now = T0 + 30 * HOUR;
    const rotated = rotate(old, now, schedule, testKey);
    const view = viewAt(rotated, now, schedule);
    assert.equal(rotated.at(-2)!.activeFrom, now);
    assert.equal(view.encrypting, rotated.at(-2)!.key);
    assert.equal(rotated.at(-1)!.activeFrom, now + 12 * HOUR);
  });

  it('a process whose clock is behind the writer encrypts with the earliest key instead of none', () => {
    const set = rotate([], T0, schedule, testKey);
    assert.equal(viewAt(set, T0 - 5000, schedule).encrypting, set[0]!.key);
  });

  it('stored sets parse strictly, and errors never quote the value', () => {
    const set = rotate([], T0, schedule, testKey);
    const raw = serializeTicketKeys(set);
    assert.deepEqual(parseTicketKeys('k', raw), set);
    const good = JSON.parse(raw) as { version: number; keys: { activeFrom: number; key: string }[] };
    const secret = good.keys[0]!.key;
    const variants: Record<string, string> = {
      truncated: raw.slice(0, -5),
      version: JSON.stringify({ ...good, version: 2 }),
      'no keys': JSON.stringify({ ...good, keys: [] }),
      'short key': JSON.stringify({ ...good, keys: [{ activeFrom: T0, key: Buffer.alloc(47).toString('base64') }] }),
      'not base64': JSON.stringify({ ...good, keys: [{ activeFrom: T0, key: '!'.repeat(64) }] }),
      'negative time': JSON.stringify({ ...good, keys: [{ activeFrom: -1, key: secret }] }),
      'same name twice': JSON.stringify({ ...good, keys: [good.keys[0], { activeFrom: T0 + 1, key: secret }] }),
      descending: JSON.stringify({ ...good, keys: [...good.keys].reverse() }),
      'too many': JSON.stringify({ ...good, keys: Array.from({ length: 17 }, (_, i) => ({ activeFrom: i, key: testKey().toString('base64') })) }),
      huge: JSON.stringify({ ...good, pad: 'x'.repeat(10_000) }),
    };
    for (const [what, value] of Object.entries(variants)) {
      assert.throws(() => parseTicketKeys('k', value), (error: unknown) => {
        assert.ok(error instanceof CorruptStorageError, what);
        assert.ok(!(error as Error).message.includes(secret.slice(0, 12)), `${what}: the message quotes the key`);
        return true;
      });
    }
  });

  it('options are validated', () => {
    assert.throws(() => ticketSchedule({ rotationIntervalMs: 1000 }), ConfigError);
    assert.throws(() => ticketSchedule({ overlapMs: -1 }), ConfigError);
    assert.deepEqual(ticketSchedule(), { rotationIntervalMs: 12 * HOUR, overlapMs: 12 * HOUR });
  });
});

describe('session-ticket keys on the engine clock, shared through storage', () => {
  function counting(inner: Storage) {
    let writes = 0;
    const storage = interceptStorage(inner, {
      store: (k, v, o) => {
        if (k === keys.sessionTicketKeys) writes++;
        return inner.store(k, v, o);
      },
    });
    return { storage, writes: () => writes };
  }

  it('two processes: the same keys; one write per rotation between them; old tickets resume within the overlap only', async () => {
    const clock = new ManualClock(T0);
    const { storage, writes } = counting(memoryStorage({ now: () => clock.now() }));
    const silent = pino({ level: 'silent' });
    const a = new SessionTickets({ storage, clock, logger: silent }, schedule);
    const b = new SessionTickets({ storage, clock, logger: silent }, schedule);
    await Promise.all([a.start(), b.start()]);
    assert.equal(writes(), 1, 'the set is created once');
    const sa = fakeServer();
    const sb = fakeServer();
    a.attach(sa.server);
    b.attach(sb.server);
    assert.ok(sa.context.enabled && sb.context.enabled, "Node's ticket key callback is enabled");
    const first = sa.encryptingName();
    assert.deepEqual(sb.encryptingName(), first, 'both processes encrypt with the same key');
    assert.equal(sb.decrypt(first), 1, "b resumes a's ticket");
    assert.equal(sb.decrypt(Buffer.alloc(16, 7)), 0, 'an unknown key name means a full handshake');

    for (let rotation = 1; rotation <= 3; rotation++) {
      clock.advance(12 * HOUR);
      await Promise.all([a.settled(), b.settled()]);
      assert.equal(writes(), 1 + rotation, `rotation ${rotation}: one write for the cluster`);
      assert.notDeepEqual(sa.encryptingName(), first);
      assert.deepEqual(sb.encryptingName(), sa.encryptingName(), `rotation ${rotation}: both switched`);
      if (rotation === 1) {
        assert.equal(sb.decrypt(first), 2, 'within the overlap: resumed, with a fresh ticket under the new key');
        clock.advance(6 * HOUR - 1);
        assert.equal(sa.decrypt(first), 2, '1 ms before the overlap ends');
        clock.advance(1);
        assert.equal(sa.decrypt(first), 0, 'past the overlap: a full handshake');
        assert.equal(sb.decrypt(first), 0);
      }
    }
    const stored = parseTicketKeys('k', (await storage.load(keys.sessionTicketKeys))!);
    assert.ok(stored.length <= 3, `retired keys are dropped from storage (${stored.length} kept)`);
    await Promise.all([a.stop(), b.stop()]);
    assert.equal(clock.pending, 0, 'no timer left after stop');
  });

  it('a process that starts while storage is down rotates keys of its own, then joins the cluster when storage is back', async () => {
    const clock = new ManualClock(T0);
    const inner = memoryStorage({ now: () => clock.now() });
    let down = true;
    let triesWhileDown = 0;
    const flaky = interceptStorage(inner, {
      load: (key, next) => (down ? (triesWhileDown++, Promise.reject(new StorageError('storage down'))) : next(key)),
    });
    const { logger, text } = captureLogs();
    const lonely = new SessionTickets({ storage: flaky, clock, logger }, schedule);
    await lonely.start();
    const server = fakeServer();
    lonely.attach(server.server);
    const own = server.encryptingName();
    assert.equal(server.decrypt(own), 1, 'its own tickets resume on it');
    assert.match(text(), /cannot use the cluster's keys yet/);

    const healthy = new SessionTickets({ storage: inner, clock, logger: pino({ level: 'silent' }) }, schedule);
    await healthy.start();
    const other = fakeServer();
    healthy.attach(other.server);
    assert.equal(other.decrypt(own), 0, 'not the cluster key yet');

    for (let minute = 0; minute < 5; minute++) {
      clock.advance(60_000);
      await lonely.settled();
    }
    assert.equal(triesWhileDown, 6, 'storage is asked again once a minute, not in a loop');
    down = false;
    clock.advance(60_000);
    await lonely.settled();
    assert.deepEqual(server.encryptingName(), other.encryptingName(), 'after the retry it uses the cluster keys');
    await Promise.all([lonely.stop(), healthy.stop()]);
  });

  it('a rotation lock held by a process that died delays the rotation by a minute, not for ever', async () => {
    const clock = new ManualClock(T0);
    const storage = memoryStorage({ now: () => clock.now() });
    const tickets = new SessionTickets({ storage, clock, logger: pino({ level: 'silent' }) }, schedule);
    await tickets.start();
    const server = fakeServer();
    tickets.attach(server.server);
    const stored = async () => parseTicketKeys('k', (await storage.load(keys.sessionTicketKeys))!);
    const [, next] = await stored();
    clock.advance(12 * HOUR - 1000);
    await storage.lock(keys.sessionTicketLock, 30_000); // taken just before the rotation, never released
    clock.advance(1000);
    await tickets.settled(); // (waits for the lock a moment, in real time, then gives up)
    assert.deepEqual(server.encryptingName(), next!.key.subarray(0, 16), 'the published next key encrypts anyway');
    assert.equal((await stored()).length, 2, 'no new next key while the lock is held');
    clock.advance(60_000);
    await tickets.settled();
    const after = await stored();
    assert.equal(after.length, 3, 'a minute later, the lease gone, the next key is published');
    assert.equal(viewAt(after, clock.now(), schedule).needsRotation, false);
    await tickets.stop();
  });

  it('a corrupt stored set is replaced under the lock, and no key ever reaches a log line', async () => {
    const clock = new ManualClock(T0);
    const storage = memoryStorage({ now: () => clock.now() });
    await storage.store(keys.sessionTicketKeys, '{"version":1,"keys":[{"activeFrom":1,"key":"AAAA"}');
    const { logger, text } = captureLogs();
    const tickets = new SessionTickets({ storage, clock, logger }, schedule);
    await tickets.start();
    const secretsAtStart = await storedSecrets(storage);
    assert.ok(secretsAtStart.length > 0, 'a valid set was written');
    for (let i = 0; i < 4; i++) {
      clock.advance(12 * HOUR);
      await tickets.settled();
    }
    await tickets.stop();
    const log = text();
    assert.match(log, /ignoring corrupt session-ticket keys/);
    assert.match(log, /session-ticket keys rotated/);
    const secrets = [...secretsAtStart, ...(await storedSecrets(storage))];
    for (const secret of secrets) assert.ok(!log.includes(secret), 'a key reached the log');
  });
});

const connect = (port: number, session?: Buffer) => connectResuming(port, { session });

describe('TLS resumption between two engines sharing one storage', () => {
  async function node(storage: Storage, clock: ManualClock, options: { sessionTickets?: false; attach?: boolean } = {}) {
    const engine = createCertEngine({ storage, clock, issuers: [localCaIssuer()], names: ['app.localhost'], ...(options.sessionTickets === false ? { sessionTickets: false as const } : { sessionTickets: schedule }) });
    await engine.start();
    const tlsOptions = engine.tlsOptions();
    const server = tls.createServer({ ...tlsOptions }, (socket) => socket.end('ok'));
    if (options.attach !== false) engine.attachServer(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      engine,
      tlsOptions,
      server,
      port: (server.address() as AddressInfo).port,
      close: async () => {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await engine.stop();
      },
    };
  }
  const settled = (...engines: CertEngine[]) => Promise.all(engines.map((e) => e._maintenanceSettled()));
  /** Two engines on one memory storage and manual clock, each behind its own TLS server; `body` runs, then both stop. */
  async function twoEngines(options: [Parameters<typeof node>[2], Parameters<typeof node>[2]], body: (a: Awaited<ReturnType<typeof node>>, b: Awaited<ReturnType<typeof node>>, clock: ManualClock, storage: Storage) => Promise<void>): Promise<void> {
    const clock = new ManualClock(Date.now());
    const storage = memoryStorage({ now: () => clock.now() });
    await installTestCa(storage);
    const a = await node(storage, clock, options[0]);
    const b = await node(storage, clock, options[1]);
    try {
      await body(a, b, clock, storage);
    } finally {
      await a.close();
      await b.close();
    }
  }

  it('a session from one resumes on the other, through a rotation, and not past the overlap', () =>
    twoEngines([{}, {}], async (a, b, clock) => {
      assert.equal(a.tlsOptions.sessionIdContext, b.tlsOptions.sessionIdContext);
      assert.ok(!('ticketKeys' in a.tlsOptions), 'no key is handed to a server that may never be attached');
      const first = await connect(a.port);
      assert.equal(first.reused, false);
      assert.ok(first.session, 'the server issued a ticket');
      assert.equal((await connect(b.port, first.session)).reused, true, 'resumed on the other process');

      clock.advance(12 * HOUR);
      await settled(a.engine, b.engine);
      assert.equal((await connect(b.port, first.session)).reused, true, 'within the overlap');
      const fresh = await connect(a.port);
      assert.equal((await connect(b.port, fresh.session)).reused, true, 'a ticket under the new key resumes too');

      clock.advance(6 * HOUR);
      await settled(a.engine, b.engine);
      assert.equal((await connect(a.port, first.session)).reused, false, 'past the overlap: full handshake');
      assert.equal((await connect(b.port, first.session)).reused, false);
      assert.equal((await connect(b.port, fresh.session)).reused, true, 'the newer ticket still resumes');
    }));

  it('a server nobody attached is attached by its first full handshake', () =>
    twoEngines([{}, { attach: false }], async (a, b) => {
      const fromA = await connect(a.port);
      assert.equal((await connect(b.port, fromA.session)).reused, false, 'not attached yet: its own random key');
      assert.equal((await connect(b.port, fromA.session)).reused, true, 'that full handshake attached it');
    }));

  it('server.setSecureContext() replaces the context the keys were on: attachServer() wires the new one (and so does the next full handshake)', () =>
    twoEngines([{}, {}], async (a, b) => {
      const fromA = await connect(a.port);
      assert.equal((await connect(b.port, fromA.session)).reused, true);
      b.server.setSecureContext({ sessionIdContext: b.tlsOptions.sessionIdContext! });
      b.engine.attachServer(b.server);
      assert.equal((await connect(b.port, fromA.session)).reused, true, 'attached again at once');
      b.server.setSecureContext({ sessionIdContext: b.tlsOptions.sessionIdContext! });
      assert.equal((await connect(b.port, fromA.session)).reused, false, 'a new context, not attached: its own random key');
      assert.equal((await connect(b.port, fromA.session)).reused, true, 'that full handshake attached it');
    }));

  it('sessionTickets: false leaves tickets to Node: no shared keys, no session id context', () =>
    twoEngines([{ sessionTickets: false }, { sessionTickets: false }], async (a, b, _clock, storage) => {
      assert.ok(!('sessionIdContext' in a.tlsOptions));
      const fromA = await connect(a.port);
      assert.equal((await connect(a.port, fromA.session)).reused, true, 'Node still resumes on the same server');
      assert.equal((await connect(b.port, fromA.session)).reused, false, 'but not on another');
      assert.equal(await storage.load(keys.sessionTicketKeys), undefined, 'nothing stored');
    }));
});

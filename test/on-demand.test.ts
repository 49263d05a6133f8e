import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ConfigError, InvalidNameError, NameNotAllowedError } from '../src/errors.js';
import { createOnDemandGate, OnDemandRefusedError, type OnDemandOptions, type OnDemandRefusal } from '../src/engine/on-demand.js';
import { TokenBucket } from '../src/engine/token-bucket.js';
import { RejectionLog } from '../src/names.js';

/** A pino logger whose lines land in `lines` (parsed), synchronously. */
function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => (raw.push(s), lines.push(JSON.parse(s))) });
  return { logger, lines, raw };
}

function fakeClock(start = 1_000_000) {
  const clock = { t: start, now: () => clock.t };
  return clock;
}

function gateWith(options: OnDemandOptions, clock = fakeClock()) {
  const log = capture();
  const gate = createOnDemandGate(options, { now: clock.now, logger: log.logger });
  return { gate, clock, log };
}

const info = { servername: 'example.com', remoteAddress: '192.0.2.1' };

async function refusal(promise: Promise<unknown>): Promise<OnDemandRefusal> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof OnDemandRefusedError, `not an OnDemandRefusedError: ${String(error)}`);
    assert.ok(error instanceof NameNotAllowedError);
    assert.equal(error.code, 'ERR_NAME_NOT_ALLOWED');
    return error.reason;
  }
  assert.fail('check resolved; expected a refusal');
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('TokenBucket', () => {
  it('allows burst, then refill × elapsed, capped at burst', () => {
    const clock = fakeClock();
    const bucket = new TokenBucket({ burst: 5, refillPerSecond: 2, now: clock.now });
    for (let i = 0; i < 5; i++) assert.equal(bucket.tryTake(), true, `token ${i}`);
    assert.equal(bucket.tryTake(), false);
    assert.equal(bucket.nextTokenAt(), clock.t + 500);
    clock.t += 1500; // 3 tokens
    assert.equal(bucket.available(), 3);
    for (let i = 0; i < 3; i++) assert.equal(bucket.tryTake(), true);
    assert.equal(bucket.tryTake(), false);
    clock.t += 250;
    assert.equal(bucket.tryTake(), false); // half a token
    clock.t += 250;
    assert.equal(bucket.tryTake(), true); // the halves add up
    clock.t += 3_600_000;
    assert.equal(bucket.available(), 5);
  });

  it('does not lose a token to float error at slow refill rates', () => {
    const clock = fakeClock(0);
    const bucket = new TokenBucket({ burst: 1, refillPerSecond: 1 / 36, now: clock.now });
    assert.equal(bucket.tryTake(), true);
    for (let i = 1; i <= 100; i++) {
      assert.equal(bucket.nextTokenAt(), clock.t + 36_000);
      clock.t += 35_999;
      assert.equal(bucket.tryTake(), false);
      clock.t += 1;
      assert.equal(bucket.tryTake(), true, `token ${i}`);
    }
  });

  it('ignores a clock stepping backwards and reports Infinity when it never refills', () => {
    const clock = fakeClock();
    const bucket = new TokenBucket({ burst: 1, refillPerSecond: 1, now: clock.now });
    assert.equal(bucket.tryTake(), true);
    clock.t -= 10_000;
    assert.equal(bucket.tryTake(), false);
    clock.t += 11_000; // one second past where it was
    assert.equal(bucket.tryTake(), true);
    const fixed = new TokenBucket({ burst: 1, refillPerSecond: 0, now: clock.now });
    assert.equal(fixed.tryTake(), true);
    assert.equal(fixed.nextTokenAt(), Infinity);
  });

  it('refuses nonsense settings', () => {
    assert.throws(() => new TokenBucket({ burst: 0, refillPerSecond: 1 }), ConfigError);
    assert.throws(() => new TokenBucket({ burst: 1, refillPerSecond: -1 }), ConfigError);
    assert.throws(() => new TokenBucket({ burst: NaN, refillPerSecond: 1 }), ConfigError);
  });
});

describe('RejectionLog', () => {
  it('logs at most once per interval, with the counts since the last line', () => {
    const { logger, lines, raw } = capture();
    const clock = fakeClock();
    const log = new RejectionLog({ logger, now: clock.now, intervalMs: 60_000 });
    log.record('bad-character', 'a/b');
    assert.equal(lines.length, 1, 'the first rejection is logged at once');
    assert.deepEqual(lines[0].rejected, { 'bad-character': 1 });
    for (let i = 0; i < 10_000; i++) log.record(i % 2 ? 'too-long' : 'wildcard', `x${i}`);
    clock.t += 59_999;
    log.record('too-long', 'y');
    assert.equal(lines.length, 1, 'a flood inside the interval writes nothing');
    clock.t += 1;
    log.record('bad-character', 'evil\r\n{"level":60,"msg":"forged"}\u202e');
    assert.equal(lines.length, 2);
    assert.deepEqual(lines[1].rejected, { wildcard: 5000, 'too-long': 5001, 'bad-character': 1 });
    assert.equal(lines[1].count, 10_002);
    assert.equal(lines[1].sampleReason, 'bad-character');
    assert.ok(!/[\r\u202e]/.test(String(lines[1].sample)), 'sample is escaped');
    assert.ok(raw.every((line) => line.indexOf('\n') === line.length - 1), 'one physical line per entry');
    log.flush();
    assert.equal(lines.length, 2, 'nothing pending, nothing written');
    log.record('wildcard', '*');
    clock.t += 1000;
    log.flush();
    assert.equal(lines.length, 3, 'flush writes what is pending');
    assert.deepEqual(log.counts(), { 'bad-character': 2, wildcard: 5001, 'too-long': 5001 });
    assert.equal(log.total, 10_004);
  });

  it('records InvalidNameErrors without escaping twice', () => {
    const { logger, lines } = capture();
    const log = new RejectionLog({ logger });
    log.recordError(new InvalidNameError('a\nb', 'bad-character'));
    assert.equal(lines[0].sample, '"a\\nb"');
  });
});

describe('on-demand gate: configuration', () => {
  const deps = { now: () => 0, logger: pino({ enabled: false }) };
  it('refuses on-demand without a decision', () => {
    assert.throws(
      () => createOnDemandGate({}, deps),
      (e: unknown) => e instanceof ConfigError && e.message === 'on-demand issuance needs a decision: set onDemand.decide or onDemand.ask',
    );
  });
  it('validates the ask URL and numbers up front', () => {
    assert.throws(() => createOnDemandGate({ ask: 'ftp://example.com/ask' }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ ask: 'file:///etc/passwd' }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ ask: 'not a url' }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ ask: 'https://user:pw@example.com/ask' }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ decide: () => true, cacheTtlMs: -1 }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ decide: () => true, askTimeoutMs: 0 }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ decide: () => true, maxCacheEntries: 1.5 }, deps), ConfigError);
    assert.throws(() => createOnDemandGate({ decide: () => true, rateLimit: { burst: 0 } }, deps), ConfigError);
    assert.doesNotThrow(() => createOnDemandGate({ ask: 'http://127.0.0.1:1/ask?key=v' }, deps));
  });
});

describe('on-demand gate: decide', () => {
  it('caches allows and denials (decide is called once per name)', async () => {
    const calls: string[] = [];
    const { gate } = gateWith({ decide: (name) => (calls.push(name), name === 'yes.example') });
    for (let i = 0; i < 5; i++) {
      await gate.check('yes.example', info);
      assert.equal(await refusal(gate.check('no.example', info)), 'denied');
    }
    assert.deepEqual(calls, ['yes.example', 'no.example']);
    assert.equal(gate.stats().decisions, 2);
  });

  it('expires denials after negativeCacheTtlMs and allows after cacheTtlMs', async () => {
    let answer = false;
    let calls = 0;
    const { gate, clock } = gateWith({ decide: () => (calls++, answer), negativeCacheTtlMs: 300_000, cacheTtlMs: 3_600_000 });
    assert.equal(await refusal(gate.check('a.example', info)), 'denied');
    answer = true;
    clock.t += 299_999;
    assert.equal(await refusal(gate.check('a.example', info)), 'denied');
    assert.equal(calls, 1);
    clock.t += 1;
    await gate.check('a.example', info);
    assert.equal(calls, 2);
    answer = false;
    clock.t += 3_599_999;
    await gate.check('a.example', info);
    assert.equal(calls, 2);
    clock.t += 1;
    assert.equal(await refusal(gate.check('a.example', info)), 'denied', 'a later decision can refuse');
    assert.equal(calls, 3);
  });

  it('makes concurrent identical checks once', async () => {
    const answer = deferred<boolean>();
    let calls = 0;
    const { gate } = gateWith({ decide: () => (calls++, answer.promise) });
    const checks = Array.from({ length: 100 }, () => gate.check('same.example', info));
    assert.equal(gate.stats().inFlight, 1);
    answer.resolve(true);
    await Promise.all(checks);
    assert.equal(calls, 1);
    assert.equal(gate.stats().inFlight, 0);
  });

  it('fails closed on a throw, a rejection, a non-boolean or a hang, and caches that only briefly', async () => {
    let calls = 0;
    const behaviours: Array<() => unknown> = [
      () => {
        throw new Error('database down');
      },
      () => Promise.reject(new Error('database down')),
      () => 'yes',
      () => new Promise(() => {}),
    ];
    // The decide timeout is unref'd (it must not keep a process alive); keep this test's loop alive.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      for (const behave of behaviours) {
      const { gate, clock } = gateWith({
        decide: () => (calls++, behave()) as boolean,
        decideTimeoutMs: 20,
        errorCacheTtlMs: 10_000,
      });
      const before = calls;
      assert.equal(await refusal(gate.check('x.example', info)), 'decision-failed');
      assert.equal(await refusal(gate.check('x.example', info)), 'decision-failed');
      assert.equal(calls, before + 1, 'the failure is cached');
      clock.t += 10_000;
      assert.equal(await refusal(gate.check('x.example', info)), 'decision-failed');
      assert.equal(calls, before + 2, 'but only for errorCacheTtlMs');
      }
    } finally {
      clearInterval(keepAlive);
    }
  });

  it('bounds the cache (LRU)', async () => {
    const calls: string[] = [];
    const { gate } = gateWith({ decide: (name) => (calls.push(name), true), maxCacheEntries: 3 });
    for (const n of ['a.x', 'b.x', 'c.x']) await gate.check(n, info);
    await gate.check('a.x', info); // a is now the most recently used
    await gate.check('d.x', info); // evicts b
    assert.equal(gate.stats().cacheEntries, 3);
    await gate.check('a.x', info);
    await gate.check('b.x', info);
    assert.deepEqual(calls, ['a.x', 'b.x', 'c.x', 'd.x', 'b.x']);
  });

  it('holds no more than maxCacheEntries after a flood of random names', async () => {
    const { gate, log } = gateWith({ decide: () => false, maxCacheEntries: 100 });
    for (let i = 0; i < 10_000; i++) await refusal(gate.check(`r${i}.example`, info));
    assert.equal(gate.stats().cacheEntries, 100);
    assert.equal(gate.stats().refusals.denied, 10_000);
    assert.equal(log.lines.length, 1, 'one summary line, not one per handshake');
  });

  it('refuses new decisions beyond maxPendingDecisions', async () => {
    const answer = deferred<boolean>();
    const { gate } = gateWith({ decide: () => answer.promise, maxPendingDecisions: 2 });
    const a = gate.check('a.example', info);
    const b = gate.check('b.example', info);
    const a2 = gate.check('a.example', info); // joins the one in flight
    assert.equal(await refusal(gate.check('c.example', info)), 'overloaded');
    answer.resolve(true);
    await Promise.all([a, b, a2]);
    await gate.check('c.example', info); // room again
  });

  it('a TTL of 0 or maxCacheEntries 0 caches nothing', async () => {
    for (const options of [{ cacheTtlMs: 0 }, { maxCacheEntries: 0 }]) {
      let calls = 0;
      const { gate } = gateWith({ decide: () => (calls++, true), ...options });
      await gate.check('a.example', info);
      await gate.check('a.example', info);
      assert.equal(calls, 2, JSON.stringify(options));
      assert.equal(gate.stats().cacheEntries, 0);
    }
  });

  it('forget() drops a cached decision', async () => {
    let calls = 0;
    const { gate } = gateWith({ decide: () => (calls++, true) });
    await gate.check('a.example', info);
    gate.forget('a.example');
    await gate.check('a.example', info);
    assert.equal(calls, 2);
  });

  it('passes the name and handshake info to decide', async () => {
    const seen: unknown[] = [];
    const { gate } = gateWith({ decide: (name, i) => (seen.push([name, i]), true) });
    await gate.check('a.example', { servername: 'A.Example.', remoteAddress: '192.0.2.7' });
    assert.deepEqual(seen, [['a.example', { servername: 'A.Example.', remoteAddress: '192.0.2.7' }]]);
  });
});

describe('on-demand gate: issuance budget', () => {
  it('takeIssuanceToken spends the bucket and reports rate-limited', () => {
    const { gate, clock, log } = gateWith({ decide: () => true, rateLimit: { burst: 3, refillPerSecond: 1 } });
    assert.deepEqual([1, 2, 3, 4].map(() => gate.takeIssuanceToken('n.example')), [true, true, true, false]);
    assert.equal(gate.nextIssuanceTokenAt(), clock.t + 1000);
    assert.equal(gate.stats().refusals['rate-limited'], 1);
    assert.equal(log.lines[0].level, 40, 'budget exhaustion is a warning');
    clock.t += 1000;
    assert.equal(gate.takeIssuanceToken('n.example'), true);
  });

  it('defaults to burst 20, then one per 36 s', () => {
    const { gate, clock } = gateWith({ decide: () => true });
    let taken = 0;
    while (gate.takeIssuanceToken('n.example')) taken++;
    assert.equal(taken, 20);
    clock.t += 36_000 * 10;
    taken = 0;
    while (gate.takeIssuanceToken('n.example')) taken++;
    assert.equal(taken, 10);
  });

  it('check() spends no budget', async () => {
    const { gate } = gateWith({ decide: () => true, rateLimit: { burst: 1, refillPerSecond: 0 } });
    for (let i = 0; i < 50; i++) await gate.check(`n${i}.example`, info);
    assert.equal(gate.stats().issuanceTokens, 1);
  });
});

describe('on-demand gate: ask endpoint', () => {
  let server: Server;
  let base: string;
  let closedPort: number;
  const requests: string[] = [];
  const held: ServerResponse[] = [];

  before(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      requests.push(`${url.pathname}?${url.searchParams.toString()}`);
      switch (url.pathname) {
        case '/allow':
          return res.writeHead(200).end('ok');
        case '/no-content':
          return res.writeHead(204).end();
        case '/deny':
          return res.writeHead(403).end('no');
        case '/error':
          return res.writeHead(500).end('boom');
        case '/busy':
          return res.writeHead(429).end();
        case '/redirect':
          return res.writeHead(302, { location: `${base}/allow` }).end();
        case '/slow':
          held.push(res); // never answered in time
          return;
        default:
          return res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
  });

  after(async () => {
    for (const res of held) res.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const ask = (path: string, extra: Partial<OnDemandOptions> = {}) => gateWith({ ask: `${base}${path}`, ...extra }).gate;

  it('allows on 2xx and sends ?domain=<name>, keeping the configured query', async () => {
    requests.length = 0;
    await ask('/allow?key=secret').check('shop.example', info);
    await ask('/no-content').check('shop.example', info);
    assert.deepEqual(requests, ['/allow?key=secret&domain=shop.example', '/no-content?domain=shop.example']);
  });

  it('caches the answer', async () => {
    requests.length = 0;
    const gate = ask('/allow');
    for (let i = 0; i < 5; i++) await gate.check('shop.example', info);
    assert.equal(requests.length, 1);
  });

  it('refuses on 403 (denied), 500 and 429 (decision-failed)', async () => {
    assert.equal(await refusal(ask('/deny').check('a.example', info)), 'denied');
    assert.equal(await refusal(ask('/error').check('a.example', info)), 'decision-failed');
    assert.equal(await refusal(ask('/busy').check('a.example', info)), 'decision-failed');
  });

  it('does not follow a redirect, even to an allowing URL', async () => {
    requests.length = 0;
    assert.equal(await refusal(ask('/redirect').check('a.example', info)), 'decision-failed');
    assert.deepEqual(requests, ['/redirect?domain=a.example'], 'the allowing URL was never requested');
  });

  it('refuses when the endpoint is slower than askTimeoutMs', async () => {
    const started = Date.now();
    assert.equal(await refusal(ask('/slow', { askTimeoutMs: 100 }).check('a.example', info)), 'decision-failed');
    assert.ok(Date.now() - started < 2000, 'gave up near the timeout');
  });

  it('refuses when the endpoint is down (closed port), logging why once', async () => {
    const { gate, log } = gateWith({ ask: `http://127.0.0.1:${closedPort}/ask` });
    assert.equal(await refusal(gate.check('a.example', info)), 'decision-failed');
    assert.equal(await refusal(gate.check('b.example', info)), 'decision-failed');
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0].level, 40);
    assert.match(String(log.lines[0].sampleDetail), /ECONNREFUSED/);
  });

  it('asks only when decide allowed, and needs both to allow', async () => {
    requests.length = 0;
    assert.equal(await refusal(ask('/allow', { decide: () => false }).check('a.example', info)), 'denied');
    assert.equal(requests.length, 0, 'decide said no: the endpoint is not asked');
    assert.equal(await refusal(ask('/deny', { decide: () => true }).check('a.example', info)), 'denied');
    await ask('/allow', { decide: () => true }).check('a.example', info);
    assert.equal(requests.length, 2);
  });

  it('URL-encodes whatever name it is given', async () => {
    requests.length = 0;
    assert.equal(await refusal(ask('/deny').check('a.example&domain=evil.example', info)), 'denied');
    assert.deepEqual(requests, ['/deny?domain=a.example%26domain%3Devil.example']);
  });
});

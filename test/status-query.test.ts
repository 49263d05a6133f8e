/**
 * Status at many names: pages with a cursor and a filter, an async walk that
 * yields to the event loop, counts by state kept as states change, and an
 * admin handler (page, /status.json, /metrics, live updates) that never asks
 * an engine for every name's status when it can page and count.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { createAdminHandler } from '../src/admin/handler.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import type { NameRecord } from '../src/engine/name-record.js';
import { statusPage } from '../src/engine/status-query.js';
import { ConfigError } from '../src/errors.js';
import type { LifecycleState, NameStatus } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

const T0 = Math.floor(Date.now() / 1000) * 1000;
const namesOf = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}.localhost`);

/** An engine with `ok` names served (valid) and `bad` names whose attempts fail (failed-backoff). */
async function mixedEngine(ok: number, bad: number): Promise<{ engine: CertEngine; clock: ManualClock }> {
  const clock = new ManualClock(T0);
  const storage = memoryStorage();
  await installTestCa(storage);
  const good = scriptedIssuer({ mode: { kind: 'succeed' } });
  const okNames = new Set(namesOf('ok', ok));
  // One issuer whose outcome depends on the name: the `bad` names fail.
  const issuer = {
    ...good,
    id: 'mixed',
    issue: async (request: Parameters<typeof good.issue>[0], context: Parameters<typeof good.issue>[1]) => {
      if (!okNames.has(request.names[0]!)) throw Object.assign(new Error('refused by the test CA'), { name: 'IssuanceError' });
      return good.issue(request, context);
    },
  };
  const engine = createCertEngine({ storage, issuers: [issuer], names: [...okNames, ...namesOf('bad', bad)], clock, maxLiveActors: 5 });
  await engine.start();
  // Every name attempts once (nothing stored): wait until none is attempting any more.
  for (let i = 0; i < 200 && engine.status().some((s) => s.state === 'obtaining' || s.state === 'loading'); i++) await new Promise((r) => setTimeout(r, 10));
  return { engine, clock };
}

function countByState(status: readonly NameStatus[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of status) out[s.state] = (out[s.state] ?? 0) + 1;
  return out;
}

const nonZero = (byState: Record<LifecycleState, number>) => Object.fromEntries(Object.entries(byState).filter(([, n]) => n !== 0));

describe('engine status at many names', () => {
  it('pages walk every name once, in order, filtered; the last page has no cursor; bad input is a ConfigError', async () => {
    const { engine } = await mixedEngine(23, 7);
    try {
      const all = engine.status();
      assert.equal(all.length, 30);
      const seen: string[] = [];
      let after: string | undefined;
      let pages = 0;
      do {
        const page = engine.statusPage({ limit: 4, ...(after !== undefined ? { after } : {}) });
        assert.ok(page.names.length <= 4 && page.names.length > 0);
        seen.push(...page.names.map((s) => s.name));
        after = page.next;
        pages++;
      } while (after !== undefined);
      assert.equal(pages, 8);
      assert.deepEqual(seen, all.map((s) => s.name));
      assert.deepEqual(engine.statusPage({ limit: 4, after: engine.statusPage({ limit: 29 }).next! }).names.map((s) => s.name), [all[29]!.name]);
      // A full last page says so (no cursor to an empty page).
      assert.equal(engine.statusPage({ limit: 30 }).next, undefined);

      const failing = engine.statusPage({ state: 'failed-backoff', limit: 100 }).names;
      assert.deepEqual(failing.map((s) => s.name), namesOf('bad', 7));
      assert.deepEqual(engine.statusPage({ nameIncludes: 'OK1', limit: 100 }).names.map((s) => s.name), all.map((s) => s.name).filter((n) => n.includes('ok1')));
      assert.equal(engine.statusPage({ managed: false }).names.length, 0);
      assert.equal(engine.statusPage({ state: ['valid', 'failed-backoff'], limit: 100 }).names.length, 30);

      for (const bad of [{ limit: 0 }, { limit: 10_001 }, { limit: 1.5 }, { after: 'x' }, { after: '-1' }, { state: 'asleep' as LifecycleState }]) {
        assert.throws(() => engine.statusPage(bad), ConfigError, JSON.stringify(bad));
      }
    } finally {
      await engine.stop();
    }
  });

  it('a page builds a status only for the names it lists (names before the cursor cost no object)', () => {
    const records = Array.from({ length: 1000 }, (_, i) => ({ name: `n${i}`, seq: i, state: 'valid', managed: true }) as unknown as NameRecord);
    let built = 0;
    const statusOf = (r: NameRecord): NameStatus => {
      built++;
      return { name: r.name, state: r.state, managed: r.managed, attempts: 0 };
    };
    const first = statusPage(records, { limit: 10 }, statusOf);
    const second = statusPage(records, { limit: 10, after: first.next! }, statusOf);
    assert.deepEqual(second.names.map((s) => s.name), Array.from({ length: 10 }, (_, i) => `n${i + 10}`));
    assert.equal(built, 20);
    statusPage(records, { limit: 10, after: '989' }, statusOf);
    assert.equal(built, 30);
  });

  it('statuses() yields every name once and lets the event loop run during a long walk', async () => {
    // 2,100 names whose attempts never end (no certificate to sign: the walk is what is measured), 2 that failed.
    const storage = memoryStorage();
    const hanging = scriptedIssuer({ mode: { kind: 'hang' } });
    const failing = scriptedIssuer({ id: 'failing', mode: { kind: 'fail' } });
    const issuer = { ...hanging, issue: (r: Parameters<typeof hanging.issue>[0], c: Parameters<typeof hanging.issue>[1]) => (r.names[0]!.startsWith('bad') ? failing.issue(r, c) : hanging.issue(r, c)) };
    const engine = createCertEngine({ storage, issuers: [issuer], names: [...namesOf('bad', 2), ...namesOf('ok', 2100)], clock: new ManualClock(T0), stopTimeoutMs: 50 });
    await engine.start();
    for (let i = 0; i < 200 && engine.statusSummary().byState['failed-backoff'] < 2; i++) await new Promise((r) => setTimeout(r, 10));
    try {
      let turns = 0;
      let stop = false;
      const spin = () => {
        if (stop) return;
        turns++;
        setImmediate(spin);
      };
      setImmediate(spin);
      const walked: string[] = [];
      for await (const s of engine.statuses()) walked.push(s.name);
      stop = true;
      assert.deepEqual(walked, engine.status().map((s) => s.name));
      assert.ok(turns >= 2, `the event loop ran ${turns} times during the walk of 2,102 names`);
      const failing: string[] = [];
      for await (const s of engine.statuses({ state: 'failed-backoff' })) failing.push(s.name);
      assert.deepEqual(failing, namesOf('bad', 2));
    } finally {
      await engine.stop();
    }
  });

  it('counts by state are kept as states change, and agree with status() (after attempts, renewals, expiry and a forced retry)', async () => {
    const { engine, clock } = await mixedEngine(12, 5);
    try {
      const check = (when: string) => {
        const summary = engine.statusSummary();
        assert.deepEqual(nonZero(summary.byState), countByState(engine.status()), when);
        assert.equal(summary.names, engine.status().length, when);
      };
      check('after start');
      assert.equal(engine.statusSummary().byState.valid, 12);
      assert.equal(engine.statusSummary().byState['failed-backoff'], 5);
      // A retry of a failing name fails again; a forced renewal of a served one succeeds.
      await assert.rejects(engine.forceRenew(namesOf('bad', 1)[0]!));
      await engine.forceRenew(namesOf('ok', 1)[0]!);
      check('after operators');
      // Past every certificate's expiry (the failing names' backoff is long over, and they fail again).
      clock.advance(100 * 86_400_000);
      for (let i = 0; i < 200 && engine.status().some((s) => s.state !== 'valid' && s.state !== 'failed-backoff'); i++) await new Promise((r) => setTimeout(r, 10));
      check('after a hundred days');
      const summary = engine.statusSummary();
      assert.equal(summary.at, clock.now());
      assert.equal(summary.expired, engine.status().filter((s) => s.certificate && s.certificate.notAfter <= clock.now()).length);
      assert.equal(engine.statusSummary({ expiry: false }).expiringWithin14d, 0);
    } finally {
      await engine.stop();
    }
  });
});

describe('counts when names leave', () => {
  it('an on-demand name evicted (no longer allowed) leaves the counts', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    let allow = true;
    // Allowed for its first certificate, refused when its renewal asks again: the name is evicted.
    const engine = createCertEngine({ storage, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], onDemand: { decide: () => allow, cacheTtlMs: 0 } });
    await engine.start();
    try {
      await engine.getCertificate('gone.localhost');
      assert.equal(engine.statusSummary().byState.valid, 1);
      allow = false;
      await assert.rejects(engine.forceRenew('gone.localhost'));
      for (let i = 0; i < 100 && engine.statusOf('gone.localhost'); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(engine.statusOf('gone.localhost'), undefined, 'evicted');
      const summary = engine.statusSummary();
      assert.equal(summary.names, 0);
      assert.deepEqual(nonZero(summary.byState), {});
    } finally {
      await engine.stop();
    }
  });
});

describe('admin handler on an engine that pages and counts', () => {
  /** The real engine, with every call to status() counted. */
  function counted(engine: CertEngine) {
    const calls = { status: 0 };
    const view = new Proxy(engine, {
      get(target, key) {
        if (key === 'status') {
          return () => {
            calls.status++;
            return target.status();
          };
        }
        const value = Reflect.get(target, key, target) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    return { view, calls };
  }

  it('the page, /status.json (paged, filtered), /metrics and live updates never list every name', async () => {
    const { engine } = await mixedEngine(40, 3);
    const { view, calls } = counted(engine);
    const handler = createAdminHandler(view, { pageSize: 10, updateIntervalMs: 5 });
    const server = http.createServer(handler).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const json = async (path: string) => {
        const res = await fetch(base + path);
        return { status: res.status, body: (await res.json()) as { names: NameStatus[]; next?: string; total: number; counts: Record<string, number>; error?: string } };
      };
      const first = await json('/status.json');
      assert.equal(first.body.names.length, 10);
      assert.equal(first.body.total, 43);
      assert.equal(first.body.counts.valid, 40);
      const second = await json(`/status.json?after=${first.body.next}&limit=5`);
      assert.deepEqual(second.body.names.map((s) => s.name), namesOf('ok', 15).slice(10));
      const failing = await json('/status.json?state=failed-backoff,storage-unreadable');
      assert.deepEqual(failing.body.names.map((s) => s.name), namesOf('bad', 3));
      for (const bad of ['?state=nope', '?limit=0', '?limit=x', '?after=zz', '?managed=yes']) assert.equal((await json(`/status.json${bad}`)).status, 400, bad);

      const page = await (await fetch(`${base}/`)).text();
      assert.match(page, /"total":43/);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /certstate_names\{state="valid"\} 40/);
      assert.match(metrics, /certstate_names\{state="failed-backoff"\} 3/);

      // A live stream: its snapshot is a page; a change sends that name's status and the counts.
      const controller = new AbortController();
      const res = await fetch(`${base}/events`, { signal: controller.signal });
      const reader = res.body!.getReader();
      let text = '';
      const until = async (pattern: RegExp) => {
        while (!pattern.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      };
      await until(/event: snapshot/);
      await engine.forceRenew(namesOf('ok', 40)[39]!);
      await until(/event: update\ndata: [^\n]*ok39\.localhost[^\n]*\n/);
      assert.match(text, /"total":43/);
      controller.abort();
      assert.equal(calls.status, 0, 'status() was never called');
    } finally {
      handler.close();
      server.close();
      await engine.stop();
    }
  });

  it('refuses a bad pageSize', () => {
    const fake = { status: () => [], on: () => () => {}, forceRenew: async () => ({}) as never, clock: { now: () => 0 } };
    for (const pageSize of [0, 10_001, 2.5]) assert.throws(() => createAdminHandler(fake, { pageSize }), ConfigError);
  });
});

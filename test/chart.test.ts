/**
 * The chart as a decision table: every state it can rest in says with
 * exactly one tag what a handshake gets there, and the questions the engine
 * and the CLI put to it (where a name read from storage goes, when its next
 * timer fires) are answered by the machine itself.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { describe, it } from 'node:test';
import { createActor, getNextTransitions, type AnyStateNode } from 'xstate';
import { ANSWER_TAGS, certificateKind, certificateMachine, createCertificateMachine, lifecycleStateOf, TAGS } from '../src/machines/certificate.js';
import { defaultTimingPolicy, renewalTime } from '../src/machines/policy.js';
import { chartDecisions } from '../src/machines/decisions.js';
import { chartQuestions } from '../src/machines/questions.js';
import type { CertificateMeta } from '../src/types.js';
import { seeded } from './helpers/seeded-random.js';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 5, 1);
const cert = (fromDays: number, toDays: number): CertificateMeta => ({
  fingerprint: `f${fromDays}:${toDays}`,
  serial: '01',
  names: ['chart.localhost'],
  notBefore: NOW + fromDays * DAY,
  notAfter: NOW + toDays * DAY,
  issuer: 'CN=test',
  issuerId: 'test',
});

function leaves(node: AnyStateNode): AnyStateNode[] {
  const children = Object.values(node.states);
  return children.length === 0 ? [node] : children.flatMap(leaves);
}

describe('the chart', () => {
  it('every state it can rest in carries exactly one answer tag; only valid may sleep', () => {
    const seen = new Map<string, string[]>();
    for (const node of leaves(certificateMachine.root)) {
      const transient = (node.always?.length ?? 0) > 0;
      if (transient || node.type === 'final') continue;
      const answers = [...node.tags].filter((tag) => (ANSWER_TAGS as readonly string[]).includes(tag));
      assert.equal(answers.length, 1, `${node.path.join('.')}: ${answers.join(', ') || 'no answer tag'}`);
      seen.set(node.path.join('.'), [...node.tags]);
    }
    assert.deepEqual([...seen].filter(([, tags]) => tags.includes(TAGS.maySleep)).map(([path]) => path), ['valid']);
    assert.ok(seen.size >= 9, `resting states: ${[...seen.keys()].join(', ')}`);
  });

  it('names its decisions without casts: typed params from the events', () => {
    const source = readFileSync(new URL('../src/machines/certificate.ts', import.meta.url), 'utf8');
    assert.doesNotMatch(source, /as unknown as/);
  });

  it('answers questions without an actor: where a stored name goes, and when its next timer fires', () => {
    const machine = createCertificateMachine({ now: () => NOW, random: () => 0, policy: defaultTimingPolicy });
    const questions = chartQuestions(machine, () => NOW);
    const valid = cert(-10, 80);
    const resting = questions.afterLoad({ certificate: valid });
    assert.equal(resting.value, 'valid');
    assert.ok(resting.hasTag(TAGS.maySleep));
    assert.equal(resting.context.renewAt, renewalTime(valid, 0, defaultTimingPolicy));
    assert.equal(questions.nextTimerAt(resting), resting.context.renewAt, 'renewal comes before expiry');
    // An ARI window past the expiry: the expiry timer comes first.
    const late = questions.next(resting, { type: 'RENEWAL_INFO', renewAt: valid.notAfter + DAY });
    assert.equal(questions.nextTimerAt(late), valid.notAfter);
    assert.deepEqual(questions.afterLoad({ certificate: cert(-80, 10) }).value, { attempting: 'renewing' });
    assert.deepEqual(questions.afterLoad({}).value, { attempting: 'obtaining' });
    const backoff = questions.afterLoad({ failure: { attempts: 2, nextAttemptAt: NOW + 600_000 } });
    assert.deepEqual(backoff.value, { 'failed-backoff': 'refusing' });
    assert.equal(questions.nextTimerAt(backoff), NOW + 600_000);
    // No effect ran: the questions hold no live actor.
    assert.equal(Object.values(resting.children).length, 0);
  });

  it('names its tags and shows its states as documented', () => {
    // The tags are read by the engine, the inspector and the status page: their spelling is API.
    assert.deepEqual(TAGS, { servesCertificate: 'serves-certificate', servesExpiredCertificate: 'serves-expired-certificate', refuses: 'refuses', holds: 'holds', resumes: 'resumes', maySleep: 'may-sleep' });
    assert.deepEqual([...ANSWER_TAGS], ['serves-certificate', 'serves-expired-certificate', 'refuses', 'holds', 'resumes']);
    assert.equal(lifecycleStateOf('paused'), 'paused');
    assert.equal(lifecycleStateOf('valid'), 'valid');
    assert.equal(lifecycleStateOf({ attempting: 'renewing' }), 'renewing');
    assert.equal(lifecycleStateOf({ attempting: 'expired-renewing' }), 'expired-renewing');
    assert.equal(lifecycleStateOf({ 'failed-backoff': 'serving' }), 'failed-backoff');
    assert.equal(lifecycleStateOf({}), 'loading');
    const c = cert(-10, 0);
    assert.equal(certificateKind({}, NOW), 'none');
    assert.equal(certificateKind({ certificate: c }, NOW - 1), 'usable');
    assert.equal(certificateKind({ certificate: c }, NOW), 'expired', 'expired at notAfter exactly');
  });

  it("names the chart and its effects as the admin page's chart and the inspector show them", () => {
    // The admin page's chart (src/admin/chart.ts) shows the root's id and each state's invoked effects by these names.
    assert.equal(certificateMachine.id, 'certificate');
    const invokes = (path: string[]) => path.reduce<AnyStateNode>((node, key) => node.states[key]!, certificateMachine.root).invoke.map((i) => [i.id, i.src]);
    assert.deepEqual(invokes(['loading']), [['load', 'loadStored']]);
    assert.deepEqual(invokes(['attempting']), [['attempt', 'attempt']]);
    assert.deepEqual(invokes(['failed-backoff']), [['persistFailure', 'persistFailure']]);
  });

  it('the exported machine runs on the real clock with the default policy', () => {
    const questions = chartQuestions(certificateMachine, Date.now);
    const now = Date.now();
    const fresh = { ...cert(0, 0), notBefore: now - DAY, notAfter: now + 89 * DAY };
    const resting = questions.afterLoad({ certificate: fresh });
    assert.equal(resting.value, 'valid');
    const renewAt = resting.context.renewAt!;
    assert.ok(renewAt <= fresh.notBefore + 60 * DAY && renewAt >= fresh.notBefore + 60 * DAY - 4.5 * DAY, 'at 2/3 of 90 days, minus up to 5 %');
  });

  it('effects not provided fail loudly, naming what is missing', async () => {
    // Actions provided but holdOperator, no actor provided.
    const partly = createCertificateMachine({ now: () => NOW, random: () => 0.5, policy: defaultTimingPolicy }).provide({
      actions: { holdHandshake: () => {}, releaseHandshakes: () => {}, releaseOperators: () => {} },
    });
    const actor = createActor(partly, { input: { name: 'chart.localhost' } });
    const errors: unknown[] = [];
    actor.subscribe({ error: (e) => errors.push(e) });
    actor.start();
    assert.equal(actor.getSnapshot().context.serveExpired, false, 'serveExpired is off unless the input says so');
    await new Promise((r) => setImmediate(r));
    // The load's creator throws: the name is in storage-unreadable with that error.
    assert.equal(actor.getSnapshot().value, 'storage-unreadable');
    assert.match(actor.getSnapshot().context.lastError!.message, /^certificate machine: loadStored was not provided \(use machine\.provide\)$/);
    // An action not provided throws out of the actor.
    actor.send({ type: 'FORCE_RENEW' });
    assert.match(String((errors[0] as Error)?.message), /holdOperator was not provided/);
    // Every effect of the chart says which one it is.
    const { actions, actors } = createCertificateMachine().implementations as unknown as {
      actions: Record<string, (...args: unknown[]) => unknown>;
      actors: Record<string, { config: (...args: unknown[]) => unknown }>;
    };
    for (const name of ['holdHandshake', 'holdOperator', 'releaseHandshakes', 'releaseOperators']) {
      assert.throws(() => actions[name]!({}, {}), new Error(`certificate machine: ${name} was not provided (use machine.provide)`));
    }
    for (const name of ['loadStored', 'attempt', 'persistFailure']) {
      assert.throws(() => actors[name]!.config({ input: {} }), new Error(`certificate machine: ${name} was not provided (use machine.provide)`));
    }
  });

  it('questions take the serveExpired of the actors they stand for (off unless said)', () => {
    const machine = createCertificateMachine({ now: () => NOW, random: () => 0, policy: defaultTimingPolicy });
    const loaded = { certificate: cert(-100, -10), failure: { attempts: 1, nextAttemptAt: NOW + 600_000 } };
    assert.deepEqual(chartQuestions(machine, () => NOW).afterLoad(loaded).value, { 'failed-backoff': 'refusing' });
    assert.deepEqual(chartQuestions(machine, () => NOW, true).afterLoad(loaded).value, { 'failed-backoff': 'serving-expired' });
  });

  it('knows when the next timer fires, in every kind of resting state', () => {
    const machine = createCertificateMachine({ now: () => NOW, random: () => 0, policy: defaultTimingPolicy });
    const questions = chartQuestions(machine, () => NOW);
    assert.equal(questions.nextTimerAt(questions.afterLoad({}) /* obtaining */), undefined, 'an attempt in flight arms nothing');
    // In backoff with a certificate expiring first: the expiry; expiring later: the end of the backoff.
    const expiringFirst = questions.afterLoad({ certificate: cert(-80, 1), failure: { attempts: 1, nextAttemptAt: NOW + 2 * DAY } });
    assert.deepEqual(expiringFirst.value, { 'failed-backoff': 'serving' });
    assert.equal(questions.nextTimerAt(expiringFirst), NOW + DAY);
    const backoffFirst = questions.afterLoad({ certificate: cert(-80, 1), failure: { attempts: 1, nextAttemptAt: NOW + 3_600_000 } });
    assert.equal(questions.nextTimerAt(backoffFirst), NOW + 3_600_000);
    // A renewal time already past when entered: due now.
    const woken = questions.afterLoad({ certificate: cert(-10, 80), renewAt: NOW + 1000 });
    assert.equal(questions.nextTimerAt(woken), NOW + 1000);
  });

  it('the next timer, asked once per state configuration, is what the chart arms, for many random stored states', () => {
    // A seeded generator: the same states every run.
    const rand = seeded(0x9e3779b9);
    const pick = <T>(items: T[]): T => items[Math.floor(rand() * items.length)]!;
    const machine = createCertificateMachine({ now: () => NOW, random: () => 0.5, policy: defaultTimingPolicy });
    const delays = machine.implementations.delays as unknown as Record<string, (a: { context: unknown }) => number>;
    // The chart's own answer, without the memo: every timer armed by the active states, computed from the context.
    const reference = (snapshot: ReturnType<typeof questions.afterLoad>): number | undefined => {
      const armed = new Set(getNextTransitions(snapshot).flatMap((t) => t.source.after));
      const times = [...armed].map((t) => NOW + delays[t.delay as string]!({ context: snapshot.context }));
      return times.length === 0 ? undefined : Math.min(...times);
    };
    const questions = chartQuestions(machine, () => NOW);
    const values = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const from = -Math.floor(rand() * 200);
      const certificate = rand() < 0.1 ? undefined : cert(from, from + 1 + Math.floor(rand() * 200));
      const failure =
        rand() < 0.5
          ? undefined
          : {
              attempts: Math.floor(rand() * 6),
              ...(rand() < 0.7 ? { nextAttemptAt: NOW + Math.floor((rand() - 0.3) * 2 * DAY) } : {}),
              ...(rand() < 0.5 ? { failingSince: NOW - Math.floor(rand() * 30 * DAY) } : {}),
              ...(rand() < 0.3 ? { lastError: { type: pick(['IssuanceError', 'RateLimitedError', 'StorageError']), message: 'm', at: NOW - 1000 } } : {}),
            };
      const renewAt = certificate && rand() < 0.3 ? NOW + Math.floor((rand() - 0.3) * 20 * DAY) : undefined;
      const loaded = { ...(certificate ? { certificate } : {}), ...(failure ? { failure } : {}), ...(renewAt !== undefined ? { renewAt } : {}) };
      const snapshot = questions.afterLoad(loaded);
      values.add(JSON.stringify(snapshot.value));
      assert.equal(questions.nextTimerAt(snapshot), reference(snapshot), `${JSON.stringify(loaded)} → ${JSON.stringify(snapshot.value)}`);
    }
    assert.ok(values.size >= 4, `configurations reached: ${[...values].join(' ')}`);
  });

  it('the memoised start-up question gives exactly what the chart answers, for many random stored states', () => {
    // Both sides draw from the same seeded sequence (one draw per name with a certificate: its renewal jitter).
    const jitter = () => seeded(0x2545f491);
    const rand = seeded(0x51ed270b);
    for (const serveExpired of [false, true]) {
      const chartDeps = { now: () => NOW, random: jitter(), policy: defaultTimingPolicy };
      const memoRandom = jitter();
      const memoDeps = { now: () => NOW, random: memoRandom, policy: defaultTimingPolicy };
      const chart = chartQuestions(createCertificateMachine(chartDeps), () => NOW, serveExpired);
      const memoMachine = createCertificateMachine(memoDeps);
      // Count what the memo asks the chart itself.
      const transition = memoMachine.transition.bind(memoMachine);
      let asked = 0;
      memoMachine.transition = ((...args: Parameters<typeof transition>) => (asked++, transition(...args))) as typeof transition;
      const memo = chartQuestions(memoMachine, () => NOW, serveExpired, chartDecisions(memoDeps));
      const values = new Set<string>();
      const N = 3000;
      let [valid, askedForValid] = [0, 0];
      for (let i = 0; i < N; i++) {
        const from = Math.floor(rand() * 220) - 200; // some not valid yet (notBefore ahead of now)
        const certificate = rand() < 0.1 ? undefined : cert(from, from + 1 + Math.floor(rand() * 200));
        const failure =
          rand() < 0.6
            ? undefined
            : {
                attempts: Math.floor(rand() * 6),
                ...(rand() < 0.7 ? { nextAttemptAt: NOW + Math.floor((rand() - 0.3) * 2 * DAY) } : {}),
                ...(rand() < 0.5 ? { failingSince: NOW - Math.floor(rand() * 30 * DAY) } : {}),
                ...(rand() < 0.3 ? { lastError: { type: 'IssuanceError', message: 'm', at: NOW - 1000 } } : {}),
                ...(rand() < 0.4 ? { orders: Array.from({ length: 1 + Math.floor(rand() * 6) }, () => NOW - Math.floor(rand() * 10 * DAY)) } : {}),
              };
        const renewAt = certificate && rand() < 0.3 ? NOW + Math.floor((rand() - 0.3) * 20 * DAY) : undefined;
        const loaded = { ...(certificate ? { certificate } : {}), ...(failure ? { failure } : {}), ...(renewAt !== undefined ? { renewAt } : {}) };
        const expected = chart.afterLoad(loaded);
        const before = asked;
        const got = memo.afterLoad(loaded);
        if (expected.value === 'valid') {
          valid++;
          askedForValid += asked - before;
        }
        const what = `${JSON.stringify(loaded)} → ${JSON.stringify(expected.value)}`;
        values.add(JSON.stringify(expected.value));
        assert.deepEqual(got.value, expected.value, what);
        assert.deepEqual([...got.tags].sort(), [...expected.tags].sort(), what);
        assert.deepEqual(got.context, expected.context, what);
        assert.equal(memo.nextTimerAt(got), chart.nextTimerAt(expected), what);
        // What the answer leads to on an event is the chart's too (a sleeping name is asked from it).
        const event = { type: 'RENEWAL_INFO' as const, renewAt: NOW + Math.floor((rand() - 0.5) * 10 * DAY) };
        const [after, expectedAfter] = [memo.next(got, event), chart.next(expected, event)];
        assert.deepEqual([after.value, after.context], [expectedAfter.value, expectedAfter.context], `${what}, then ${JSON.stringify(event)}`);
      }
      assert.ok(values.size >= 5, `configurations reached: ${[...values].join(' ')}`);
      // Names resting in `valid` (a restart's bulk) are answered by the memo: the chart asked once per combination of guards.
      assert.ok(valid > 300 && askedForValid <= 8, `the chart asked ${askedForValid} times for ${valid} valid names`);
    }
  });

  it('the memoised answer to an ARI window is exactly what the chart answers, and the very snapshot when nothing changes', () => {
    // What a sleeping name gets every recheck: RENEWAL_INFO from its resting state, again and again.
    const jitter = () => seeded(0x3c6ef372);
    const rand = seeded(0xa54ff53a);
    const chartDeps = { now: () => NOW, random: jitter(), policy: defaultTimingPolicy };
    const memoDeps = { now: () => NOW, random: jitter(), policy: defaultTimingPolicy };
    const chart = chartQuestions(createCertificateMachine(chartDeps), () => NOW);
    const memoMachine = createCertificateMachine(memoDeps);
    const transition = memoMachine.transition.bind(memoMachine);
    let asked = 0;
    memoMachine.transition = ((...args: Parameters<typeof transition>) => {
      if ((args[1] as { type: string }).type === 'RENEWAL_INFO') asked++;
      return transition(...args);
    }) as typeof transition;
    const memo = chartQuestions(memoMachine, () => NOW, false, chartDecisions(memoDeps));
    const values = new Set<string>();
    let [events, unchanged, sameSnapshot, moved] = [0, 0, 0, 0];
    for (let i = 0; i < 1500; i++) {
      const from = Math.floor(rand() * 120) - 100;
      const certificate = rand() < 0.05 ? undefined : cert(from, from + 1 + Math.floor(rand() * 120));
      const failure =
        rand() < 0.7
          ? undefined
          : {
              attempts: Math.floor(rand() * 3),
              ...(rand() < 0.5 ? { nextAttemptAt: NOW + Math.floor((rand() - 0.3) * 2 * DAY) } : {}),
              // Recent orders: the floor keeps an ARI time from coming sooner than minRenewalIntervalMs after the last.
              ...(rand() < 0.6 ? { orders: Array.from({ length: 1 + Math.floor(rand() * 3) }, () => NOW - Math.floor(rand() * 20 * 60_000)) } : {}),
            };
      const loaded = { ...(certificate ? { certificate } : {}), ...(failure ? { failure } : {}) };
      let [expected, got] = [chart.afterLoad(loaded), memo.afterLoad(loaded)];
      // Rechecks in a row: a window ahead, one in the past ("renew now", once per certificate), or the time already chosen.
      for (let k = 0; k < 4; k++) {
        const r = rand();
        const renewAt =
          r < 0.5 ? NOW + Math.floor(rand() * 60 * DAY) : r < 0.85 ? NOW - Math.floor(rand() * DAY) : r < 0.95 ? NOW : (expected.context.renewAt ?? NOW + DAY);
        const event = { type: 'RENEWAL_INFO' as const, renewAt };
        const [after, expectedAfter] = [memo.next(got, event), chart.next(expected, event)];
        const what = `${JSON.stringify(loaded)} → ${JSON.stringify(expected.value)}, then ${JSON.stringify(event)} (#${k + 1})`;
        events++;
        values.add(JSON.stringify(expected.value));
        assert.deepEqual(after.value, expectedAfter.value, what);
        assert.deepEqual([...after.tags].sort(), [...expectedAfter.tags].sort(), what);
        assert.deepEqual(after.context, expectedAfter.context, what);
        assert.equal(memo.nextTimerAt(after), chart.nextTimerAt(expectedAfter), what);
        const nothingChanged = isDeepStrictEqual(expectedAfter.value, expected.value) && isDeepStrictEqual(expectedAfter.context, expected.context);
        if (nothingChanged) unchanged++;
        else moved++;
        // The engine reads "nothing changed" from identity: the memo may say so only when the chart's answer changes nothing.
        if (after === got) {
          sameSnapshot++;
          assert.ok(nothingChanged, `${what}: the same snapshot handed back although the chart's answer changed it`);
        }
        [expected, got] = [expectedAfter, after];
      }
    }
    assert.ok(values.size >= 3, `configurations reached: ${[...values].join(' ')}`);
    assert.ok(moved > 1000 && unchanged > 1000, `answers that moved the renewal time: ${moved}, that changed nothing: ${unchanged}`);
    // Most answers that change nothing are seen as such without comparing (some are equal copies the chart gave).
    assert.ok(sameSnapshot > unchanged * 0.8, `the very snapshot handed back for ${sameSnapshot} of ${unchanged} answers that changed nothing`);
    // The chart is asked once per configuration and guard outcome (and again only while setRenewAt changes nothing for a name whose answer is not known yet).
    assert.ok(asked <= 2 * values.size + 2, `the chart asked ${asked} times for ${events} ARI windows in ${values.size} configurations`);

    // The guard's outcome is part of the memo's key: a name whose "renew now" was honoured refuses a past window
    // (nothing changes) before the memo has seen any window accepted in `valid`; a window ahead still moves it.
    const deps = { now: () => NOW, random: () => 0.5, policy: defaultTimingPolicy };
    const fresh = chartQuestions(createCertificateMachine(deps), () => NOW, false, chartDecisions(deps));
    const c = cert(-10, 80);
    const honoured = chart.next(chart.afterLoad({ certificate: c }), { type: 'RENEWAL_INFO', renewAt: NOW - DAY });
    assert.deepEqual([honoured.value, honoured.context.ariNowFor], ['valid', c.fingerprint]);
    assert.equal(fresh.next(honoured, { type: 'RENEWAL_INFO', renewAt: NOW - DAY }), honoured, 'refused: the very snapshot');
    const window = { type: 'RENEWAL_INFO' as const, renewAt: NOW + 5 * DAY };
    assert.deepEqual(fresh.next(honoured, window).context, chart.next(honoured, window).context, 'accepted: the time moves');
  });

  it("the memoised start-up question's contexts share one hidden class, name after name (no V8 map made per name)", () => {
    // V8's own answer (%HaveSameMap): a context per name with maps of its own cost ~6 maps and descriptor
    // arrays a name, dead at once in old space (a spread of the loading context did that: BENCHMARKS.md).
    setFlagsFromString('--allow-natives-syntax');
    const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
    const deps = { now: () => NOW, random: seeded(7), policy: defaultTimingPolicy };
    const memo = chartQuestions(createCertificateMachine(deps), () => NOW, false, chartDecisions(deps));
    // Many names: the object-clone inline cache of a spread settles on its fast path after the first few.
    const contexts = Array.from({ length: 500 }, (_, i) => memo.afterLoad({ certificate: { ...cert(-1 - (i % 30), 60 + (i % 30)), fingerprint: `f${i}` } }).context);
    const last = contexts.at(-1)!;
    for (const context of contexts.slice(-50, -1)) assert.ok(sameMap(last, context), 'one hidden class for every name');
    assert.ok(!sameMap(last, {}), 'the check itself tells maps apart');
  });
});


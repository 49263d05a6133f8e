/**
 * The chart as a decision table: every state it can rest in says with
 * exactly one tag what a handshake gets there, and the questions the engine
 * and the CLI put to it (where a name read from storage goes, when its next
 * timer fires) are answered by the machine itself.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { AnyStateNode } from 'xstate';
import { ANSWER_TAGS, certificateMachine, createCertificateMachine, TAGS } from '../src/machines/certificate.js';
import { defaultTimingPolicy, renewalTime } from '../src/machines/policy.js';
import { chartQuestions } from '../src/machines/questions.js';
import type { CertificateMeta } from '../src/types.js';

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
});

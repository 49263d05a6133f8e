/**
 * ARI through the engine: the CA's suggested window moves the renewal time;
 * a window in the past renews at once; an invalid window is ignored; the
 * engine asks again per Retry-After, clamped to [1 min, 1 day].
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { ariDueAt, ariRenewalTime, clampAriRecheck } from '../src/engine/ari.js';
import { createCertEngine } from '../src/engine/engine.js';
import type { Issuer, RenewalInfo } from '../src/types.js';
import { installTestCa, scriptedIssuer } from './helpers/scripted-issuer.js';

const DAY = 86_400_000;
const NAME = 'ari.localhost';

/** A scripted issuer that also answers ARI with whatever the test sets. */
function ariIssuer() {
  const base = scriptedIssuer({ mode: { kind: 'succeed' } });
  const state = { info: undefined as RenewalInfo | undefined, asked: 0 };
  const issuer: Issuer = {
    id: base.id,
    issue: (r, c) => base.issue(r, c),
    renewalInfo: async () => {
      state.asked++;
      return state.info;
    },
  };
  return { issuer, base, state };
}

const flush = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

describe('ARI', () => {
  it('picks a uniform time inside the window; now for a past window; nothing for an invalid one', () => {
    assert.equal(ariRenewalTime({ start: 1000, end: 2000 }, 0, 0.5), 1500);
    assert.equal(ariRenewalTime({ start: 1000, end: 2000 }, 5000, 0.5), 5000);
    assert.equal(ariRenewalTime({ start: 2000, end: 1000 }, 0, 0.5), undefined);
    assert.equal(ariRenewalTime({ start: 0, end: 2000 }, 1000, 0), 1000, 'a window that has begun starts now');
    assert.equal(clampAriRecheck(undefined, 0), 6 * 3_600_000);
    assert.equal(clampAriRecheck(10, 0), 60_000);
    assert.equal(clampAriRecheck(10 * DAY, 0), DAY);
    // Rechecks fall due on whole seconds, never sooner than asked (the CA's Retry-After holds).
    assert.deepEqual([ariDueAt(1), ariDueAt(999), ariDueAt(1000), ariDueAt(1001)], [1000, 1000, 1000, 2000]);
  });

  it('moves the renewal into the suggested window, renews at once for a past window, re-asks per Retry-After', async () => {
    const clock = new ManualClock();
    const storage = memoryStorage();
    await installTestCa(storage);
    const { issuer, base, state } = ariIssuer();
    const engine = createCertEngine({ storage, issuers: [issuer], names: [NAME], clock, random: () => 0.5 });
    const now = clock.now();
    state.info = { start: now + 10 * DAY, end: now + 12 * DAY, retryAfter: now + 2 * 3_600_000 };
    await engine.start();
    await new Promise((r) => engine.on('cert_obtained', r));
    await flush();
    assert.equal(state.asked, 1, 'asked once the certificate was in place');
    assert.equal(engine.status()[0]!.renewAt, now + 11 * DAY, 'renewal time from the window (random 0.5)');

    // The CA revokes: a window in the past. The next check (Retry-After, 2 h) renews at once.
    state.info = { start: now - 2 * DAY, end: now - DAY };
    const renewed = new Promise((r) => engine.on('cert_renewed', r));
    clock.advance(2 * 3_600_000);
    await flush();
    clock.advance(0); // the simulated clock fires the now-due renewal timer on its next move
    await renewed;
    assert.equal(state.asked, 2);
    assert.equal(base.calls, 2, 'renewed once');
    assert.ok(base.requests[1]!.replaces, 'the renewal names the certificate it replaces');

    // An invalid window is no answer: the lifetime rule stays.
    state.info = { start: now + 5 * DAY, end: now + 4 * DAY };
    await flush();
    const before = engine.status()[0]!.renewAt;
    clock.advance(6 * 3_600_000);
    await flush();
    assert.ok(state.asked >= 3);
    assert.equal(engine.status()[0]!.renewAt, before, 'invalid window ignored');
    await engine.stop();
    assert.equal(clock.pending, 0, 'no ARI timer left after stop');
  });
});

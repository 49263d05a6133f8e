/**
 * The CLI's view of stored records (`certstate status`): what an engine would
 * do with each, asked of the lifecycle chart (not a copy of its routing).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { readStoredStatus } from '../src/cli/stored-status.js';
import { serializeFailureRecord } from '../src/engine/stored.js';
import { defaultTimingPolicy, renewalTime } from '../src/machines/policy.js';
import { keys } from '../src/storage-keys.js';
import type { Storage } from '../src/types.js';
import { installTestCa, testLeafKey } from './helpers/scripted-issuer.js';
import { seedCertificate } from './helpers/tls.js';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 5, 1);

/** A 90-day certificate for `name` issued `ageDays` ago. */
async function seed(storage: Storage, name: string, ageDays: number) {
  const ca = localCaIssuer({ leafValidityMs: 90 * DAY, leafKey: testLeafKey() });
  const bundle = await ca.issue({ names: [name] }, { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => NOW - ageDays * DAY + 60_000 });
  return seedCertificate(storage, name, bundle);
}

describe('certstate status: stored records, as the chart routes them', () => {
  it('valid, renewal-due, expired, failed-backoff (with a valid certificate too), no-certificate — and what comes next', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    await seed(storage, 'valid.test', 1);
    await seed(storage, 'due.test', 70);
    await seed(storage, 'expired.test', 100);
    await seed(storage, 'backoff-due.test', 70);
    const failure = (name: string, nextAttemptAt: number) =>
      storage.store(keys.failure(name), serializeFailureRecord({ attempts: 2, lastError: { type: 'AcmeError', message: 'CA says no', at: NOW - 1000 }, nextAttemptAt }));
    await failure('backoff-due.test', NOW + 600_000);
    await failure('nothing.test', NOW + 600_000);
    await failure('over.test', NOW - 1); // a backoff that has ended: obtain now

    const byName = new Map((await readStoredStatus(storage, NOW)).map((s) => [s.name, s]));
    const valid = byName.get('valid.test')!;
    assert.equal(valid.state, 'valid');
    assert.equal(valid.renewAt, renewalTime(valid.certificate!, 0, defaultTimingPolicy), 'the latest renewal time (no jitter)');
    assert.deepEqual(valid.next, { action: 'renew', at: valid.renewAt });
    assert.equal(byName.get('due.test')!.state, 'renewal-due');
    assert.deepEqual(byName.get('due.test')!.next, { action: 'renew' });
    assert.equal(byName.get('expired.test')!.state, 'expired');
    const backoff = byName.get('backoff-due.test')!;
    assert.equal(backoff.state, 'failed-backoff', 'a due renewal waits for the backoff');
    assert.deepEqual(backoff.next, { action: 'retry', at: NOW + 600_000 });
    assert.equal(backoff.attempts, 2);
    assert.equal(byName.get('nothing.test')!.state, 'failed-backoff');
    assert.equal(byName.get('over.test')!.state, 'no-certificate');
    assert.deepEqual(byName.get('over.test')!.next, { action: 'obtain' });
  });
});

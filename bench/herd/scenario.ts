/**
 * The seed scenario, ready to be stampeded: one managed name whose stored
 * certificate expired ten days ago, so the engine starts straight into
 * `expired-renewing` with one attempt parked in a gated issuer; and a fresh
 * certificate minted in advance for the attempt to succeed with.
 */
import { pino } from 'pino';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import type { CertEngine } from '../../src/engine/engine.js';
import type { CertificateBundle } from '../../src/types.js';
import { installTestCa, testLeafKey } from '../../test/helpers/scripted-issuer.js';
import { seedCertificate } from '../../test/helpers/tls.js';
import { engineModule } from '../lib/engine-module.js';
import { gatedIssuer, type GatedIssuer } from './gated-issuer.js';

export const HERD_NAME = 'herd.bench.test';
const DAY = 86_400_000;

export interface HerdScenario {
  engine: CertEngine;
  issuer: GatedIssuer;
  /** What a successful attempt returns. */
  fresh: CertificateBundle;
  /** `performance.now()` of the transition that ended the attempt (`cert_failed` / `cert_renewed`). */
  endedAt(): number | undefined;
}

/** Build the scenario and start the engine; resolves once the attempt is parked in the issuer. */
export async function expiredScenario(waiters: number): Promise<HerdScenario> {
  const storage = memoryStorage();
  await installTestCa(storage);
  const context = (now: number) => ({ signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage, now: () => now });
  const expired = await localCaIssuer({ leafKey: testLeafKey(), leafValidityMs: DAY }).issue({ names: [HERD_NAME] }, context(Date.now() - 10 * DAY));
  await seedCertificate(storage, HERD_NAME, expired);
  const fresh = await localCaIssuer({ leafKey: testLeafKey(), leafValidityMs: 90 * DAY }).issue({ names: [HERD_NAME] }, context(Date.now()));

  const issuer = gatedIssuer();
  const { createCertEngine } = await engineModule();
  const engine = createCertEngine({
    storage,
    issuers: [issuer],
    names: [HERD_NAME],
    // The herd must wait for the attempt, not for its own deadline or a waiter cap.
    handshakeTimeout: 300_000,
    maxWaitersPerName: Math.max(10_000, waiters),
    maxWaiters: Math.max(100_000, waiters),
  });
  let endedAt: number | undefined;
  const mark = () => (endedAt ??= performance.now());
  engine.on('cert_failed', mark);
  engine.on('cert_renewed', mark);
  await engine.start();
  await issuer.untilPending();
  return { engine, issuer, fresh, endedAt: () => endedAt };
}

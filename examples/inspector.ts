/**
 * Inspecting certstate's per-name statecharts, offline.
 *
 *   npx tsx examples/inspector.ts
 *
 * certstate passes the engine's `inspect` option to every per-name actor
 * (ids `cert:<name>`). Any XState inspection observer works there:
 *
 * - `@statelyai/inspect` (not a dependency; its viewer page loads from
 *   stately.ai, so it needs the internet):
 *
 *     import { createWebSocketInspector } from '@statelyai/inspect';
 *     const inspector = createWebSocketInspector();
 *     createCertEngine({ ..., inspect: inspector.inspect });
 *
 * - a local observer, as below: `createLocalInspector()` has the same shape
 *   (`{ inspect }`), keeps serialised events in memory and calls subscribers.
 *   Nothing leaves the process. Machine context holds certificate metadata
 *   only (names, serial, validity, fingerprint, issuer, attempts, last error),
 *   never keys or PEMs, so inspection output is safe to log or ship.
 */
import { actorIdOf, createCertEngine, createLocalInspector, localCaIssuer, memoryStorage, stateOf } from '../src/index.js';

const NAME = 'app.localhost';

const inspector = createLocalInspector({
  // Only our certificate actors' snapshots; drop the promise actors they invoke.
  filter: (event) => event.type === '@xstate.snapshot' && actorIdOf(event.actorRef).startsWith('cert:'),
});

let last = '';
inspector.subscribe((record) => {
  const state = stateOf(record.value);
  if (`${record.actorId}:${state}` === last) return; // one line per transition
  last = `${record.actorId}:${state}`;
  const ctx = record.context as { attempts: number; certificate?: { serial: string; notAfter: number }; lastError?: { type: string; message: string } };
  const cert = ctx.certificate ? ` serial=${ctx.certificate.serial} notAfter=${new Date(ctx.certificate.notAfter).toISOString()}` : '';
  const error = ctx.lastError ? ` lastError=${ctx.lastError.type}: ${ctx.lastError.message}` : '';
  console.log(`${new Date(record.at).toISOString()} ${record.actorId.padEnd(20)} ${state.padEnd(16)} (event ${record.event?.type})${cert}${error}`);
});

const engine = createCertEngine({
  storage: memoryStorage(),
  issuers: [localCaIssuer({ leafValidityMs: 60 * 60_000 })],
  names: [NAME],
  inspect: inspector.inspect,
});

await engine.start();
await engine.forceRenew(NAME); // the start-up attempt: loading → obtaining → valid
await engine.forceRenew(NAME); // an operator's renewal: valid → renewing → valid
await engine.stop(); //          → stopped

const json = JSON.stringify(inspector.records());
console.log(`\n${inspector.records().length} snapshots recorded; PEM in them: ${/-----BEGIN/.test(json) ? 'YES (bug!)' : 'none'}`);

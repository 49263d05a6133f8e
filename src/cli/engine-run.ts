/**
 * Running an engine for one CLI command: storage, issuer (observed for
 * progress), HTTP-01 responder, engine; everything closed again, whatever
 * happens, so the process can exit on its own.
 */
import { createCertEngine, type CertEngine } from '../engine/engine.js';
import type { ManagedEntry } from '../engine/managed-names.js';
import type { NameStatus, Storage } from '../types.js';
import type { CliIo } from './io.js';
import { issuerFromFlags, startChallengeServer, type IssuerFlags } from './issuer-flags.js';
import { observedIssuer, progressLogger, progressPrinter, reportEngineEvents } from './progress.js';

/** Run `body` with a started engine managing `names` (as the engine's option); progress lines go to stderr. */
export async function withEngine<T>(io: CliIo, storage: Storage, names: ManagedEntry[], flags: IssuerFlags, body: (engine: CertEngine) => Promise<T>): Promise<T> {
  const report = progressPrinter(io.stderr);
  const issuer = observedIssuer(await issuerFromFlags(flags, io.cwd), report);
  const challenges = await startChallengeServer(flags, storage);
  const engine = createCertEngine({ storage, issuers: [issuer], names, logger: progressLogger(report) });
  const off = reportEngineEvents(engine, report);
  try {
    for (const name of names) report(typeof name === 'string' ? name : name[0]!, 'loading stored certificate and failure record');
    await engine.start();
    return await body(engine);
  } finally {
    off();
    await engine.stop();
    await challenges.close();
  }
}

/** Resolve with a name's status once no attempt is in flight (valid, failed-backoff, stopped); reject after `timeoutMs`. */
export function settled(engine: CertEngine, name: string, timeoutMs: number): Promise<NameStatus> {
  const done = (s: NameStatus | undefined) => s !== undefined && ['valid', 'failed-backoff', 'stopped'].includes(s.state);
  const current = () => engine.status().find((s) => s.name === name);
  return new Promise((resolve, reject) => {
    const now = current();
    if (done(now)) return resolve(now!);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no outcome for ${name} within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    const off = engine.on('state_changed', (e) => {
      if (e.name !== name) return;
      const s = current();
      if (!done(s)) return;
      clearTimeout(timer);
      off();
      resolve(s!);
    });
  });
}

/** `2026-03-01 12:00:00Z` */
export function isoSeconds(t: number | undefined): string {
  return t === undefined ? '-' : new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** `in 3d`, `5h ago` */
export function relative(t: number | undefined, now: number): string {
  if (t === undefined) return '';
  const d = t - now;
  const s = Math.round(Math.abs(d) / 1000);
  const text = s < 60 ? `${s}s` : s < 3600 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86_400)}d`;
  return d >= 0 ? `in ${text}` : `${text} ago`;
}

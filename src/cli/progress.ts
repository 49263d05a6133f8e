/**
 * Progress of `obtain`/`renew`, as lines on stderr, from what the public API
 * lets us see (until the engine reports issuance steps itself):
 * - engine events: attempt started, certificate obtained, attempt failed;
 * - an issuer wrapper: the issuer's start and end, and the challenge material
 *   it writes to storage (`challenges/http-01/…` published = the CA may now
 *   validate; deleted = authorization over) and the account lock it takes to
 *   register an ACME account;
 * - the issuer's log lines (`ACME account registered`, warnings).
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { CertEngineEventOf, CertEngineEventType } from '../engine/events.js';
import type { Issuer, Logger, Storage } from '../types.js';
import { errorInfoText, errorText } from './exit-codes.js';

/** One progress line's content. */
export type ProgressReporter = (name: string, text: string) => void;

/** Write progress lines (`HH:MM:SS.mmm name: text`) to a stream. */
export function progressPrinter(stream: { write(s: string): unknown }): ProgressReporter {
  return (name, text) => {
    const time = new Date().toISOString().slice(11, 23);
    stream.write(`${time} ${name}: ${text}\n`);
  };
}

/** Report engine events for the given names. Returns the unsubscribe function. */
export function reportEngineEvents(
  engine: { on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void },
  report: ProgressReporter,
): () => void {
  const offs = [
    engine.on('cert_obtaining', (e) => report(e.name, `attempt ${e.attempt} started (${e.reason})`)),
    engine.on('cert_obtained', (e) => report(e.name, `${e.adopted ? 'adopted the certificate another process stored' : 'certificate obtained'}: serial ${e.certificate.serial}, valid until ${iso(e.certificate.notAfter)}`)),
    engine.on('cert_renewed', (e) => report(e.name, `${e.adopted ? 'adopted the certificate another process stored' : 'certificate renewed'}: serial ${e.certificate.serial}, valid until ${iso(e.certificate.notAfter)}`)),
    engine.on('cert_failed', (e) => report(e.name, `attempt failed: ${errorInfoText(e.error)}; next attempt not before ${iso(e.nextAttemptAt)}`)),
  ];
  return () => offs.forEach((off) => off());
}

/** Wrap an issuer so its steps are reported. The wrapped issuer keeps the same `id`. */
export function observedIssuer(issuer: Issuer, report: ProgressReporter): Issuer {
  const wrapped: Issuer = {
    id: issuer.id,
    async issue(request, context) {
      const name = request.names[0] ?? '?';
      const started = Date.now();
      report(name, `asking ${issuer.id}${request.replaces ? ' (replacing the current certificate)' : ''}`);
      try {
        const bundle = await issuer.issue(request, { ...context, storage: observedStorage(context.storage, name, report) });
        report(name, `${issuer.id} issued a certificate in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return bundle;
      } catch (error) {
        report(name, `${issuer.id} failed after ${((Date.now() - started) / 1000).toFixed(1)} s: ${errorText(error)}`);
        throw error;
      }
    },
  };
  if (issuer.renewalInfo) wrapped.renewalInfo = issuer.renewalInfo.bind(issuer);
  return wrapped;
}

const CHALLENGE = /^challenges\/(http-01|tls-alpn-01|dns-01)\//;

/** A storage that reports the challenge and account steps an issuer takes through it. */
function observedStorage(storage: Storage, name: string, report: ProgressReporter): Storage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (prop === 'store') {
        return async (key: string, ...rest: unknown[]) => {
          const result = await (value as (...a: unknown[]) => Promise<void>).call(target, key, ...rest);
          const m = CHALLENGE.exec(key);
          if (m) report(name, `${m[1]} challenge published; waiting for the CA to validate`);
          return result;
        };
      }
      if (prop === 'delete') {
        return async (key: string) => {
          const result = await (value as (k: string) => Promise<void>).call(target, key);
          const m = CHALLENGE.exec(key);
          if (m) report(name, `${m[1]} challenge removed (authorization finished)`);
          return result;
        };
      }
      if (prop === 'lock') {
        return (key: string, ...rest: unknown[]) => {
          if (key.startsWith('locks/account/')) report(name, 'registering an ACME account');
          return (value as (...a: unknown[]) => unknown).call(target, key, ...rest);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

/**
 * A pino logger whose records become progress lines: `info` messages with a
 * `name` field (the engine's transitions are skipped: events report them),
 * and every warning or error.
 */
export function progressLogger(report: ProgressReporter, fallbackName = 'certstate'): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        try {
          const record = JSON.parse(line) as { level: number; msg?: string; name?: string; err?: { message?: string }; accountUrl?: string };
          // Transitions and issuer failures are reported from events and the issuer wrapper already.
          if (record.msg === 'certificate state' || record.msg === 'issuer failed') continue;
          const who = typeof record.name === 'string' ? record.name : fallbackName;
          if (record.level >= 40) report(who, `warning: ${record.msg ?? ''}${record.err?.message ? `: ${record.err.message}` : ''}`);
          else if (record.msg && record.msg !== 'ACME certificate issued') report(who, record.msg);
        } catch {
          // not one of our JSON lines: ignore
        }
      }
      done();
    },
  });
  return pino({ level: 'info', base: undefined, timestamp: false }, sink);
}

function iso(t: number): string {
  return new Date(t).toISOString();
}

/**
 * Fixtures for the admin, CLI and browser tests: an issuer scripted per name,
 * a small HTTP client without keep-alive (no sockets outlive a test), an SSE
 * reader, and Chromium discovery for playwright-core.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { IssuanceError } from '../../src/errors.js';
import type { CertificateBundle, IssueContext, IssueRequest, Issuer } from '../../src/types.js';
import { testLeafKey } from './scripted-issuer.js';

/** What the per-name issuer does for one name. */
export type NameOutcome =
  | { kind: 'succeed'; delayMs?: number }
  | { kind: 'fail'; message: string; detail?: string; code?: string; delayMs?: number }
  | { kind: 'hang' };

/** An issuer whose outcome is chosen per name (default: succeed), counting calls per name. */
export interface PerNameIssuer extends Issuer {
  outcomes: Map<string, NameOutcome>;
  calls: Map<string, number>;
  callsFor(name: string): number;
}

/** Create a per-name issuer backed by a local CA (shared test leaf key: fast). */
export function perNameIssuer(options: { id?: string; validityMs?: number } = {}): PerNameIssuer {
  const ca = localCaIssuer({ leafKey: testLeafKey(), ...(options.validityMs ? { leafValidityMs: options.validityMs } : {}) });
  const outcomes = new Map<string, NameOutcome>();
  const calls = new Map<string, number>();
  return {
    id: options.id ?? 'per-name',
    outcomes,
    calls,
    callsFor: (name) => calls.get(name) ?? 0,
    async issue(request: IssueRequest, context: IssueContext): Promise<CertificateBundle> {
      const name = request.names[0]!;
      calls.set(name, (calls.get(name) ?? 0) + 1);
      const outcome = outcomes.get(name) ?? { kind: 'succeed' };
      if (outcome.kind === 'hang') {
        return new Promise((_, reject) => context.signal.addEventListener('abort', () => reject(context.signal.reason), { once: true }));
      }
      if (outcome.delayMs) await new Promise((r) => setTimeout(r, outcome.delayMs));
      if (outcome.kind === 'fail') {
        throw new IssuanceError(outcome.message, { code: outcome.code ?? 'ERR_TEST', ...(outcome.detail ? { detail: outcome.detail } : {}) });
      }
      return ca.issue(request, context);
    },
  };
}

/** A plain HTTP response. */
export interface TestResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request without keep-alive. */
export function request(url: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A parsed SSE event. */
export interface SseEvent {
  event: string;
  data: unknown;
}

/** An open SSE stream: await events matching a predicate; close when done. */
export interface SseStream {
  status: number;
  events: SseEvent[];
  next(predicate: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  close(): void;
}

/** Open an SSE stream and parse its frames. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const events: SseEvent[] = [];
      const waiters: Array<{ predicate: (e: SseEvent) => boolean; resolve(e: SseEvent): void; seen: number }> = [];
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of frame.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length === 0) continue;
          const parsed = { event, data: JSON.parse(data.join('\n')) as unknown };
          events.push(parsed);
          for (const w of [...waiters]) {
            if (w.predicate(parsed)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(parsed);
            }
          }
        }
      });
      resolve({
        status: res.statusCode ?? 0,
        events,
        next(predicate, timeoutMs = 10_000) {
          const found = events.find(predicate);
          if (found) return Promise.resolve(found);
          return new Promise<SseEvent>((ok, fail) => {
            const timer = setTimeout(() => fail(new Error(`no matching SSE event within ${timeoutMs} ms; got ${JSON.stringify(events.map((e) => e.event))}`)), timeoutMs);
            waiters.push({ predicate, seen: events.length, resolve: (e) => (clearTimeout(timer), ok(e)) });
          });
        },
        close() {
          req.destroy();
        },
      });
    });
    req.on('error', reject);
  });
}

/** Debian's Chromium, where `apt-get install chromium` puts it (`CHROMIUM_PATH` overrides). */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Flags for headless Chromium as root in CI: no sandbox, no GPU, no background network. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * Whether browser tests can run. Under `CI=true` a missing Chromium is a
 * failure (the CI image must have it); locally the test is skipped, loudly.
 */
export function chromiumAvailability(): { available: true } | { available: false; message: string } {
  if (existsSync(CHROMIUM_PATH)) return { available: true };
  const message = `Chromium not found at ${CHROMIUM_PATH}: install it with \`apt-get install -y chromium\``;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: browser tests must run)`);
  process.stderr.write(`\n*** SKIPPING BROWSER TEST: ${message} ***\n\n`);
  return { available: false, message };
}

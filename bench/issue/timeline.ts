/**
 * Where a first handshake's time goes: marks taken in the bench process only,
 * never on the engine's path beyond what it already publishes.
 *
 * - HTTP requests to the CA (both sides), from Node's `http.client.*`
 *   diagnostics channels: when each request started and when its answer's
 *   headers arrived;
 * - Pebble's validation fetch of the HTTP-01 token, from `http.server.request.start`;
 * - the engine's own events (`state_changed`, `issuer_attempt`), received
 *   synchronously when the engine publishes them;
 * - the issuer's `issue()` call and return, through a wrapper around the
 *   issuer the bench hands the engine.
 *
 * One name is measured at a time, so every mark between a name's start and
 * its end belongs to that name.
 */
import diagnostics from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Issuer } from '../../src/types.js';
import { summarize, type Summary } from '../lib/stats.js';

export interface Mark {
  /** performance.now(), ms. */
  t: number;
  what: string;
}

/** A first handshake (or an `auto()` order) cut in three, ms; `detail` splits the engine's parts further. */
export interface Split {
  total: number;
  /** Start → the first request to the CA (admission, permission, budget, lock, storage, account; auto(): key and CSR). */
  before: number;
  /** First request to the CA → the certificate's download answered (newOrder … download). */
  order: number;
  /** Download answered → done (verify, parse, store, context, the rest of the TLS handshake; auto(): returning). */
  after: number;
  /** Requests to the CA within the order (HEAD newNonce included). */
  requests: number;
  /** Time between the order's requests when none was in flight (poll waits), ms. */
  idle: number;
  /** CPU time of this process (user + system) over the name, ms: the engine's side includes the bench's TLS client and the VA servers, auto()'s the VA server. */
  cpu: number;
  /** Finer cuts, where marks exist (engine: 'attempt', 'issue', 'nonce', …), ms from start. */
  detail: Record<string, number>;
}

export class Timeline {
  readonly #marks: Mark[] = [];
  readonly #inFlight = new Map<ClientRequest, string>();
  readonly #onStart = ({ request }: { request: ClientRequest }) => {
    const what = `${request.method} ${request.path}`;
    this.#inFlight.set(request, what);
    this.mark(`req> ${what}`);
  };
  readonly #onFinish = ({ request, response }: { request: ClientRequest; response: IncomingMessage }) => {
    const what = this.#inFlight.get(request) ?? `${request.method} ${request.path}`;
    this.#inFlight.delete(request);
    this.mark(`res< ${what} ${response.statusCode}`);
  };
  readonly #onServer = ({ request }: { request: IncomingMessage }) => {
    if (request.url?.startsWith('/.well-known/acme-challenge/')) this.mark('va-fetch');
  };

  constructor() {
    diagnostics.subscribe('http.client.request.start', this.#onStart as (m: unknown) => void);
    diagnostics.subscribe('http.client.response.finish', this.#onFinish as (m: unknown) => void);
    diagnostics.subscribe('http.server.request.start', this.#onServer as (m: unknown) => void);
  }

  mark(what: string): void {
    this.#marks.push({ t: performance.now(), what });
  }

  /** The marks since the last take, and forget them. */
  take(): Mark[] {
    return this.#marks.splice(0);
  }

  close(): void {
    diagnostics.unsubscribe('http.client.request.start', this.#onStart as (m: unknown) => void);
    diagnostics.unsubscribe('http.client.response.finish', this.#onFinish as (m: unknown) => void);
    diagnostics.unsubscribe('http.server.request.start', this.#onServer as (m: unknown) => void);
  }
}

/** The issuer, marking its `issue()` call and return on `timeline` (the bench's own wrapper: nothing on the engine's path). */
export function markedIssuer(issuer: Issuer, timeline: Timeline): Issuer {
  return {
    ...issuer,
    async issue(request, context) {
      timeline.mark('issue>');
      try {
        return await issuer.issue(request, context);
      } finally {
        timeline.mark('issue<');
      }
    },
  };
}

/** Cut one name's marks (taken between `start` and `end`) into before / order / after. */
export function split(marks: Mark[], start: number, end: number, cpuUs: number): Split | undefined {
  const requests = marks.filter((m) => m.what.startsWith('req> '));
  const answers = marks.filter((m) => m.what.startsWith('res< '));
  if (requests.length === 0 || answers.length === 0) return undefined;
  const first = requests[0]!.t;
  const download = [...answers].reverse().find((m) => /\/certZ?\//i.test(m.what) || /\/cert\b/i.test(m.what)) ?? answers.at(-1)!;
  const idle = idleTime(marks.filter((m) => m.t >= first && m.t <= download.t));
  const detail: Record<string, number> = {};
  for (const m of marks) {
    const key = m.what.startsWith('req> ') || m.what.startsWith('res< ') ? undefined : m.what;
    if (key !== undefined && detail[key] === undefined) detail[key] = m.t - start;
  }
  detail['first request'] = first - start;
  detail['download answered'] = download.t - start;
  return {
    total: end - start,
    before: first - start,
    order: download.t - first,
    after: end - download.t,
    requests: requests.filter((m) => m.t <= download.t).length,
    idle,
    cpu: cpuUs / 1000,
    detail,
  };
}

/** Time within the marks when no request to the CA was in flight. */
function idleTime(marks: Mark[]): number {
  let open = 0;
  let idleSince: number | undefined;
  let idle = 0;
  for (const m of marks) {
    if (m.what.startsWith('req> ')) {
      if (open === 0 && idleSince !== undefined) idle += m.t - idleSince;
      open++;
    } else if (m.what.startsWith('res< ')) {
      open = Math.max(0, open - 1);
      if (open === 0) idleSince = m.t;
    }
  }
  return idle;
}

/** Median of each part over several splits. */
export function summarizeSplits(splits: Split[]): Record<string, Summary> {
  const out: Record<string, Summary> = {};
  for (const key of ['total', 'before', 'order', 'after', 'requests', 'idle', 'cpu'] as const) out[key] = summarize(splits.map((s) => s[key]));
  const detailKeys = new Set(splits.flatMap((s) => Object.keys(s.detail)));
  for (const key of detailKeys) {
    const values = splits.map((s) => s.detail[key]).filter((v): v is number => v !== undefined);
    out[`at ${key}`] = summarize(values);
  }
  return out;
}

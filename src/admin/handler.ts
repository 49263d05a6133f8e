/**
 * The admin HTTP handler: status page, live updates (SSE), JSON status,
 * Prometheus metrics, the statechart, and the renew/retry action. Mount it on
 * any `http` server (`http.createServer(handler)`), or use `serveAdmin`.
 *
 * Routes (below `basePath`):
 *   GET  /                  the status page
 *   GET  /status.json       a page of names' status and recent transitions, with counts by state
 *                           (`?after=<next>&limit=&state=a,b&managed=true|false&q=<part of the name>`)
 *   GET  /events            Server-Sent Events: `snapshot` on connect, then `update`
 *   GET  /metrics           Prometheus text format
 *   GET  /diagram.svg       the statechart (`?state=valid` highlights one)
 *   GET  /diagram.mmd       the statechart as Mermaid
 *   POST /names/:name/renew start one attempt now (`?wait=1`: answer with its outcome)
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AnyStateMachine } from 'xstate';
import type { EngineStats } from '../engine/options.js';
import type { CertEngineEventOf, CertEngineEventType } from '../engine/events.js';
import { ConfigError } from '../errors.js';
import { certificateMachine } from '../machines/certificate.js';
import { normalizeName } from '../names.js';
import { safeError } from '../safe-error.js';
import { MAX_PAGE_SIZE, type StatusPage, type StatusQuery, type StatusSummary, type StatusSummaryOptions } from '../engine/status-query.js';
import { LIFECYCLE_STATES, type CertificateMeta, type LifecycleState, type NameStatus } from '../types.js';
import { assertValidToken, checkAccess, checkAction } from './access.js';
import { readChart } from './chart.js';
import { toMermaid, toSvg } from './diagram.js';
import { TransitionHistory } from './history.js';
import { LiveStreams, sseFrame } from './live-streams.js';
import { metricsSource, MetricsCollector, renderMetrics } from './metrics.js';
import { renderPage } from './page.js';
import { PROMETHEUS_CONTENT_TYPE } from './prometheus.js';
import { briefError, nameView, type NameView } from './view.js';

export type { NameView } from './view.js';

/** What the admin handler needs from an engine (`CertEngine` has all of it). */
export interface AdminEngine {
  /** Every name's status: used only by an engine without `statusPage` and `statusSummary`. */
  status(): NameStatus[];
  /** A page of names (optional: with it, no request lists every name). */
  statusPage?(query: StatusQuery): StatusPage;
  /** Counts by state and expiry (optional: with it, `/metrics` builds no object per name). */
  statusSummary?(options?: StatusSummaryOptions): StatusSummary;
  /** One name's status (optional: with it, live updates read only the names that changed). */
  statusOf?(name: string): NameStatus | undefined;
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void;
  forceRenew(name: string): Promise<CertificateMeta>;
  readonly clock: { now(): number };
  /** Memory figures for `/metrics` (optional: an engine without them omits those gauges). */
  readonly stats?: EngineStats;
}

/** Options of {@link createAdminHandler}. */
export interface AdminHandlerOptions {
  /**
   * Require this bearer token (header `Authorization: Bearer …` or `?token=`)
   * on every request. At least `MIN_TOKEN_LENGTH` (16) printable ASCII
   * characters without spaces; anything else (an empty string included) is
   * refused with `ConfigError`. Without a token, only loopback peers with a
   * loopback `Host` are served.
   */
  token?: string;
  /** Path prefix the handler is mounted under, e.g. `/admin` (default: the root). */
  basePath?: string;
  /**
   * Without a token, extra `Host` names accepted besides loopback ones (e.g. a
   * name in `/etc/hosts`). The peer must still be a loopback address.
   */
  allowedHosts?: string[];
  /** Transitions kept per name (default 20). */
  historySize?: number;
  /** Share a metrics collector, attached to the engine by its owner; default: a new one, attached here. */
  metrics?: MetricsCollector;
  /** The engine's issuer ids, for labelling failed attempts (see `MetricsCollectorOptions`). */
  issuerIds?: string[];
  /** Count handshakes for `/metrics` (default true; see `MetricsCollectorOptions.handshakes`). */
  handshakeMetrics?: boolean;
  /**
   * Names the status page, its live stream's snapshot and `/status.json` list
   * at once, 1–10,000 (default 1,000); counts by state always cover every name.
   */
  pageSize?: number;
  /** Page title (default `certstate`). */
  title?: string;
  /** SSE: coalesce updates for this long, ms (default 100); bounds `status()` calls to one per window. */
  updateIntervalMs?: number;
  /** SSE: comment line interval that keeps proxies from closing idle streams, ms (default 20,000). */
  heartbeatMs?: number;
  /** SSE: most concurrent streams (default 100). */
  maxStreams?: number;
  /**
   * SSE: bytes one stream may hold queued (unread by its client) beyond its
   * first snapshot before it is dropped (default 1 MiB). Bounds the memory of
   * live streams to `maxStreams` × (snapshot + this). Drops are counted in
   * `certstate_admin_streams_dropped_total`; the page reconnects by itself.
   */
  maxStreamBufferBytes?: number;
  /** The chart to draw (default `certificateMachine`). */
  machine?: AnyStateMachine;
}

/** A request handler with its resources. Call `close()` when done: it ends live streams and unsubscribes. */
export interface AdminHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  /** The transition history it keeps. */
  readonly history: TransitionHistory;
  /** The metrics collector it exposes. */
  readonly metrics: MetricsCollector;
  /** End every SSE stream, stop timers and unsubscribe from the engine. Idempotent. */
  close(): void;
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-frame-options': 'DENY',
} as const;

/**
 * Create the admin handler. Create it before `engine.start()` to record the
 * start-up transitions in the history.
 *
 * @example http.createServer(createAdminHandler(engine, { token })).listen(9090, '127.0.0.1')
 */
export function createAdminHandler(engine: AdminEngine, options: AdminHandlerOptions = {}): AdminHandler {
  if (options.token !== undefined) assertValidToken(options.token, 'createAdminHandler');
  const base = normalizeBase(options.basePath);
  const machine = options.machine ?? certificateMachine;
  const history = new TransitionHistory({ perName: options.historySize ?? 20 });
  const metrics = options.metrics ?? new MetricsCollector({ issuerIds: options.issuerIds, handshakes: options.handshakeMetrics ?? true });
  const updateIntervalMs = options.updateIntervalMs ?? 100;
  const chart = readChart(machine);
  const parents = Object.fromEntries(
    chart.states.filter((s) => s.parent !== '').map((s) => [s.key, chart.states.find((p) => p.id === s.parent)!.key]),
  );
  const paths = { events: `${base}/events`, status: `${base}/status.json`, renew: `${base}/names/{name}/renew`, metrics: `${base}/metrics` };

  const streams = new LiveStreams({
    maxStreams: positive(options.maxStreams, 100, 'maxStreams'),
    maxBufferedBytes: positive(options.maxStreamBufferBytes, 1024 * 1024, 'maxStreamBufferBytes'),
    heartbeatMs: positive(options.heartbeatMs, 20_000, 'heartbeatMs'),
    onDrop: () => metrics.recordStreamDropped(),
  });
  const changed = new Set<string>();
  let flushTimer: NodeJS.Timeout | undefined;
  let closed = false;

  const pageSize = options.pageSize ?? 1000;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) throw new ConfigError(`createAdminHandler: \`pageSize\` must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  const views = (status: NameStatus[]): NameView[] => status.map((s) => nameView(s, history.of(s.name)));
  /** Counts by state over every name (O(1) with `statusSummary`). */
  const counts = (all?: NameStatus[]): { total: number; counts: Partial<Record<LifecycleState, number>> } => {
    if (engine.statusSummary) {
      const summary = engine.statusSummary({ expiry: false });
      return { total: summary.names, counts: summary.byState };
    }
    const byState: Partial<Record<LifecycleState, number>> = {};
    for (const s of all ?? engine.status()) byState[s.state] = (byState[s.state] ?? 0) + 1;
    return { total: (all ?? engine.status()).length, counts: byState };
  };
  /** A page of names with the counts over all of them; `query` may narrow it (ConfigError on bad input). */
  const snapshot = (query: StatusQuery = {}) => {
    if (engine.statusPage) {
      const page = engine.statusPage({ limit: pageSize, ...query });
      return { now: engine.clock.now(), names: views(page.names), ...(page.next !== undefined ? { next: page.next } : {}), ...counts() };
    }
    const all = engine.status();
    return { now: engine.clock.now(), names: views(all), ...counts(all) };
  };
  const statusOf = (name: string): NameStatus | undefined => (engine.statusOf ? engine.statusOf(name) : engine.status().find((s) => s.name === name));

  // Order matters: the history records a transition before the SSE batch that reports it.
  const offs = [history.attach(engine), ...(options.metrics ? [] : [metrics.attach(engine)])];
  for (const type of ['state_changed', 'cert_obtaining', 'cert_obtained', 'cert_renewed', 'cert_failed', 'cert_expired'] as const) {
    offs.push(engine.on(type, (e: { name: string }) => markChanged(e.name)));
  }

  function markChanged(name: string): void {
    if (streams.size === 0) return;
    changed.add(name);
    // One batch per window, however many transitions (an engine without `statusOf` lists every name once per batch).
    flushTimer ??= setTimeout(flush, updateIntervalMs).unref();
  }

  function flush(): void {
    flushTimer = undefined;
    if (changed.size === 0 || streams.size === 0) return changed.clear();
    const byName = engine.statusOf ? undefined : new Map(engine.status().map((s) => [s.name, s]));
    const names: NameView[] = [];
    const removed: string[] = [];
    for (const name of changed) {
      const s = byName ? byName.get(name) : statusOf(name);
      if (s) names.push(nameView(s, history.of(name)));
      else removed.push(name);
    }
    changed.clear();
    streams.broadcast('update', { now: engine.clock.now(), names, removed, ...counts() });
  }

  function openStream(req: IncomingMessage, res: ServerResponse): void {
    if (streams.full) return sendJson(res, 503, { error: 'too many live streams' });
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    streams.open(req, res, `retry: 2000\n${sseFrame('snapshot', snapshot())}`);
  }

  async function renew(res: ServerResponse, rawName: string, wait: boolean): Promise<void> {
    let name: string;
    try {
      name = normalizeName(decodeURIComponent(rawName), { allowWildcard: true, allowIp: true });
    } catch {
      return sendJson(res, 400, { error: 'invalid name' });
    }
    const current = statusOf(name);
    if (!current) return sendJson(res, 404, { error: 'unknown name', name });
    const outcome = engine.forceRenew(name);
    if (!wait) {
      // The outcome arrives over SSE; never leave the rejection unhandled.
      outcome.catch(() => undefined);
      return sendJson(res, 202, { accepted: true, name, state: current.state });
    }
    try {
      const certificate = await outcome;
      sendJson(res, 200, { ok: true, name, certificate });
    } catch (error) {
      const { type, message } = safeError(error);
      const detail = error instanceof Error ? (error as { detail?: unknown }).detail : undefined;
      sendJson(res, 502, { ok: false, name, error: briefError({ type, message, detail: typeof detail === 'string' ? detail : undefined }) });
    }
  }

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin.invalid');
    } catch {
      return sendJson(res, 400, { error: 'bad request' });
    }
    if (closed) return sendJson(res, 503, { error: 'admin handler closed' });
    const refused = checkAccess(req, url, options);
    if (refused) {
      const headers: Record<string, string> = refused.status === 401 ? { 'www-authenticate': 'Bearer realm="certstate"' } : {};
      return sendJson(res, refused.status, { error: refused.reason }, headers);
    }
    if (base !== '' && url.pathname === base) return redirect(res, `${base}/`);
    const path = url.pathname.startsWith(`${base}/`) ? url.pathname.slice(base.length) : undefined;
    if (path === undefined) return sendJson(res, 404, { error: 'not found' });
    const method = req.method ?? 'GET';

    const renewMatch = /^\/names\/([^/]+)\/renew$/.exec(path);
    if (renewMatch) {
      if (method !== 'POST') return sendJson(res, 405, { error: 'use POST' }, { allow: 'POST' });
      const refusedAction = checkAction(req);
      if (refusedAction) return sendJson(res, refusedAction.status, { error: refusedAction.reason });
      req.resume(); // no body expected; drain whatever came
      renew(res, renewMatch[1]!, url.searchParams.get('wait') === '1').catch((error: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: safeError(error).message });
      });
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });

    switch (path) {
      case '/': {
        const nonce = randomBytes(16).toString('base64');
        const html = renderPage({
          config: { paths, parents, title: options.title ?? 'certstate', pageSize },
          initial: snapshot(),
          svg: toSvg(machine, { styleNonce: nonce }),
          nonce,
        });
        return send(res, 200, 'text/html; charset=utf-8', html, {
          'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        });
      }
      case '/status.json': {
        let query: StatusQuery;
        try {
          query = statusQuery(url.searchParams);
          return sendJson(res, 200, snapshot(query));
        } catch (error) {
          if (error instanceof ConfigError) return sendJson(res, 400, { error: error.message });
          throw error;
        }
      }
      case '/events':
        return openStream(req, res);
      case '/metrics':
        return send(res, 200, PROMETHEUS_CONTENT_TYPE, renderMetrics(metricsSource(engine), engine.clock.now(), metrics, engine.stats));
      case '/diagram.svg': {
        const state = url.searchParams.get('state') ?? undefined;
        return send(res, 200, 'image/svg+xml; charset=utf-8', toSvg(machine, state ? { highlight: state } : {}), {
          'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
        });
      }
      case '/diagram.mmd':
        return send(res, 200, 'text/plain; charset=utf-8', toMermaid(machine));
      default:
        return sendJson(res, 404, { error: 'not found' });
    }
  }) as AdminHandler;

  Object.defineProperties(handler, {
    history: { value: history, enumerable: true },
    metrics: { value: metrics, enumerable: true },
    close: {
      value: () => {
        if (closed) return;
        closed = true;
        offs.forEach((off) => off());
        if (flushTimer) clearTimeout(flushTimer);
        flushTimer = undefined;
        streams.close();
      },
    },
  });
  return handler;
}

/** `/status.json`'s query: a page cursor and size, and the filter (checked by the engine: ConfigError). */
function statusQuery(params: URLSearchParams): StatusQuery {
  const query: StatusQuery = {};
  const after = params.get('after');
  if (after !== null) query.after = after;
  const limit = params.get('limit');
  if (limit !== null) {
    if (!/^[0-9]{1,6}$/.test(limit)) throw new ConfigError('`limit` must be a whole number');
    query.limit = Number(limit);
  }
  const state = params.get('state');
  if (state !== null) {
    const states = state.split(',');
    for (const s of states) if (!(LIFECYCLE_STATES as readonly string[]).includes(s)) throw new ConfigError(`unknown state ${JSON.stringify(s.slice(0, 40))}`);
    query.state = states as LifecycleState[];
  }
  const managed = params.get('managed');
  if (managed !== null) {
    if (managed !== 'true' && managed !== 'false') throw new ConfigError('`managed` must be true or false');
    query.managed = managed === 'true';
  }
  const q = params.get('q');
  if (q !== null) query.nameIncludes = q.slice(0, 253);
  return query;
}

/** A positive number option, or its default. */
function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (!(typeof value === 'number' && Number.isFinite(value) && value > 0)) throw new ConfigError(`createAdminHandler: \`${what}\` must be a positive finite number`);
  return value;
}

function normalizeBase(basePath: string | undefined): string {
  if (!basePath || basePath === '/') return '';
  const trimmed = `/${basePath.replace(/^\/+|\/+$/g, '')}`;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(trimmed)) throw new ConfigError(`basePath ${JSON.stringify(basePath)} must be a plain URL path`);
  return trimmed;
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), headers);
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(308, { ...SECURITY_HEADERS, location });
  res.end();
}

/**
 * certstate's metrics, in the Prometheus text format.
 *
 * Gauges (names per state, certificates expiring) come from
 * `engine.statusSummary()` at scrape time (counts by state kept as states
 * change, expiry counted in one pass over the names: no object per name), or,
 * for an engine without it, from `engine.status()`.
 * Counters and the wait histogram come from events, accumulated by a
 * `MetricsCollector` attached to the engine.
 *
 * Vocabulary (stable; label values in backticks):
 * - `certstate_names{state}`: names per lifecycle state (every state listed, 0 included).
 * - `certstate_certificates_expiring{within="7d"|"14d"}`: names whose certificate's notAfter is
 *   within that window from now (already expired included).
 * - `certstate_certificates_expired`: names whose certificate has expired.
 * - `certstate_certificate_next_expiry_timestamp_seconds`: the earliest notAfter of all names (absent with none).
 * - `certstate_issuance_attempts_total{issuer,result,error_type}`: finished issuance attempts;
 *   result `success` | `adopted` (another process had stored one) | `failure`; error_type is the
 *   error class (`AcmeRateLimitedError`, …) or empty.
 * - `certstate_handshakes_total{answer="immediate"|"waited"|"failed"}`: handshakes by how they
 *   were answered (the engine's `handshake` event); `certstate_handshake_wait_seconds`: histogram
 *   of the time handshakes that waited (held for an attempt, successful or not) spent waiting.
 * - `certstate_live_actors`, `certstate_sleeping_names`, `certstate_cached_certificates`,
 *   `certstate_waiting_handshakes`: what the engine holds in memory (`engine.stats`).
 * - `certstate_admin_streams_dropped_total`: live streams of the status page dropped
 *   because their client fell behind (see `AdminHandlerOptions.maxStreamBufferBytes`).
 *
 * The same families reach a prom-client registry through `registerPromClient`.
 */
import type { EngineStats } from '../engine/options.js';
import { summarizeStatuses, type StatusSummary } from '../engine/status-query.js';
import type { CertEngineEventOf, CertEngineEventType, HandshakeEvent } from '../engine/events.js';
import { LIFECYCLE_STATES, type NameStatus } from '../types.js';
import { Histogram, PrometheusWriter, type MetricSink } from './prometheus.js';

/** Every lifecycle state, in the order metrics list them. */
export { LIFECYCLE_STATES };

/** Default bounds of `certstate_handshake_wait_seconds`, up to the default handshake timeout (30 s). */
export const DEFAULT_WAIT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];


/** How a handshake was answered (the engine's `HandshakeEvent.outcome`). */
export type HandshakeAnswerKind = HandshakeEvent['outcome'];

/** The engine events the collector listens to (a subset of `CertEngine`). */
export interface MetricsEventSource {
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void;
}

/** Options of {@link MetricsCollector}. */
export interface MetricsCollectorOptions {
  /**
   * The engine's issuer ids, in order. A failed attempt's event does not say
   * which issuer failed; with exactly one issuer it is that one, otherwise
   * failures are labelled `issuer="unknown"` (until the engine reports it).
   */
  issuerIds?: string[];
  /** Bounds of the wait histogram, seconds. */
  waitBuckets?: readonly number[];
  /**
   * Count handshakes (default true). The engine publishes its `handshake`
   * event only while someone listens: this costs one small event per
   * handshake; turn it off to keep the handshake path bare.
   */
  handshakes?: boolean;
}

/** Accumulates event-driven metrics (attempt outcomes, handshakes). */
export class MetricsCollector {
  readonly #attempts = new Map<string, { issuer: string; result: string; errorType: string; count: number }>();
  readonly #handshakes = new Map<HandshakeAnswerKind, number>([
    ['immediate', 0],
    ['waited', 0],
    ['failed', 0],
  ]);
  readonly #wait: Histogram;
  readonly #issuerIds: string[];
  readonly #countHandshakes: boolean;
  #streamsDropped = 0;
  /** Names with an attempt in flight: a `cert_failed` without one is a storage read failure, not an issuance attempt. */
  readonly #inFlight = new Set<string>();

  constructor(options: MetricsCollectorOptions = {}) {
    this.#issuerIds = options.issuerIds ?? [];
    this.#wait = new Histogram(options.waitBuckets ?? DEFAULT_WAIT_BUCKETS);
    this.#countHandshakes = options.handshakes ?? true;
  }

  /** Subscribe to an engine's events. Returns the unsubscribe function. */
  attach(engine: MetricsEventSource): () => void {
    const offs = [
      engine.on('cert_obtaining', (e) => this.#inFlight.add(e.name)),
      engine.on('cert_obtained', (e) => this.#finish(e.name, e.certificate.issuerId, e.adopted ? 'adopted' : 'success', '')),
      engine.on('cert_renewed', (e) => this.#finish(e.name, e.certificate.issuerId, e.adopted ? 'adopted' : 'success', '')),
      engine.on('cert_failed', (e) => {
        if (this.#inFlight.has(e.name)) this.#finish(e.name, this.#issuerIds.length === 1 ? this.#issuerIds[0]! : 'unknown', 'failure', e.error.type);
      }),
    ];
    if (this.#countHandshakes) offs.push(engine.on('handshake', (e) => this.observeHandshake(e)));
    return () => offs.forEach((off) => off());
  }

  /** Count one finished attempt. */
  recordAttempt(issuer: string, result: 'success' | 'adopted' | 'failure', errorType = ''): void {
    const key = `${issuer}\u0000${result}\u0000${errorType}`;
    const entry = this.#attempts.get(key) ?? { issuer, result, errorType, count: 0 };
    entry.count++;
    this.#attempts.set(key, entry);
  }

  /** Count one answered handshake, and its wait if it was held (a failure after waiting counts as a wait too). */
  observeHandshake(event: Pick<HandshakeEvent, 'outcome' | 'waitedMs'>): void {
    this.#handshakes.set(event.outcome, (this.#handshakes.get(event.outcome) ?? 0) + 1);
    if (event.outcome === 'waited' || (event.outcome === 'failed' && event.waitedMs > 0)) this.#wait.observe(event.waitedMs / 1000);
  }

  /** Count one live stream of the status page dropped for falling behind. */
  recordStreamDropped(): void {
    this.#streamsDropped++;
  }

  /** Attempt counters, one entry per (issuer, result, error type). */
  attempts(): Array<{ issuer: string; result: string; errorType: string; count: number }> {
    return [...this.#attempts.values()].map((e) => ({ ...e }));
  }

  /** Handshake counters by answer. */
  handshakes(): Record<HandshakeAnswerKind, number> {
    return Object.fromEntries(this.#handshakes) as Record<HandshakeAnswerKind, number>;
  }

  /** Write the event-driven families. */
  write(writer: MetricSink): void {
    writer.counter(
      'certstate_issuance_attempts_total',
      'Finished issuance attempts by issuer, result (success, adopted, failure) and error type.',
      this.attempts().map((e) => ({ labels: { issuer: e.issuer, result: e.result, error_type: e.errorType }, value: e.count })),
    );
    writer.counter(
      'certstate_handshakes_total',
      'TLS handshakes by how they were answered: immediate, waited (held for an attempt), failed (no certificate).',
      [...this.#handshakes].map(([answer, value]) => ({ labels: { answer }, value })),
    );
    writer.histogram('certstate_handshake_wait_seconds', 'Time handshakes held for an attempt waited for their answer (engine clock).', [{ data: this.#wait.data() }]);
    writer.counter('certstate_admin_streams_dropped_total', 'Live streams of the status page dropped because their client fell behind.', [{ value: this.#streamsDropped }]);
  }

  #finish(name: string, issuer: string, result: 'success' | 'adopted' | 'failure', errorType: string): void {
    this.#inFlight.delete(name);
    this.recordAttempt(issuer, result, errorType);
  }
}

/**
 * The full exposition: status-derived gauges from a summary (or computed from a
 * status list at `now`), the engine's memory figures (when given), then the
 * collector's families (when given).
 */
export function renderMetrics(status: readonly NameStatus[] | StatusSummary, now: number, collector?: MetricsCollector, stats?: EngineStats): string {
  const writer = new PrometheusWriter();
  writeMetrics(writer, status, now, collector, stats);
  return writer.toString();
}

/** Every family {@link renderMetrics} writes, into any sink (one computation for the text and prom-client). */
export function writeMetrics(writer: MetricSink, status: readonly NameStatus[] | StatusSummary, now: number, collector?: MetricsCollector, stats?: EngineStats): void {
  const summary = isSummary(status) ? status : summarizeStatuses(status, now);
  writer.gauge('certstate_names', 'Names held by the engine, by lifecycle state.', LIFECYCLE_STATES.map((state) => ({ labels: { state }, value: summary.byState[state] ?? 0 })));
  writer.gauge('certstate_certificates_expiring', 'Names whose certificate expires within the window (expired ones included).', [
    { labels: { within: '7d' }, value: summary.expiringWithin7d },
    { labels: { within: '14d' }, value: summary.expiringWithin14d },
  ]);
  writer.gauge('certstate_certificates_expired', 'Names whose certificate has expired.', [{ value: summary.expired }]);
  writer.gauge(
    'certstate_certificate_next_expiry_timestamp_seconds',
    'Earliest notAfter among all certificates, seconds since epoch.',
    summary.nextExpiry !== undefined ? [{ value: summary.nextExpiry / 1000 }] : [],
  );
  if (stats) {
    writer.gauge('certstate_live_actors', 'Names with a running statechart actor.', [{ value: stats.liveActors }]);
    writer.gauge('certstate_sleeping_names', 'Valid names kept as a record instead of an actor (beyond maxLiveActors).', [{ value: stats.sleeping }]);
    writer.gauge('certstate_cached_certificates', 'Certificates whose key material is in memory (bounded by cacheCapacity).', [{ value: stats.cachedCertificates }]);
    writer.gauge('certstate_waiting_handshakes', 'Handshakes held for an attempt in flight.', [{ value: stats.waitingHandshakes }]);
  }
  collector?.write(writer);
}

function isSummary(status: readonly NameStatus[] | StatusSummary): status is StatusSummary {
  return !Array.isArray(status);
}

/** What an engine's status gauges are computed from: its summary when it has one (no object per name), else its status list. */
export function metricsSource(engine: { status(): NameStatus[]; statusSummary?(): StatusSummary }): readonly NameStatus[] | StatusSummary {
  return typeof engine.statusSummary === 'function' ? engine.statusSummary() : engine.status();
}

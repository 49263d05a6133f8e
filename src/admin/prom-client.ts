/**
 * certstate's metrics in an application's prom-client registry, beside (or
 * instead of) the admin handler's `/metrics`: the same families, names, help
 * texts and values, computed by the same `writeMetrics` at scrape time.
 *
 * prom-client is never imported: the registry the application hands us is
 * all we touch. Each family is registered as a metric object of the shape
 * prom-client's registry reads (`name`, `help`, `type`, `aggregator`, `get()`
 * resolving to a `MetricObjectWithValues`, `reset()`), the shape prom-client's
 * own `AggregatorRegistry.aggregate` registers. Its `Gauge`/`Counter` classes
 * would do for gauges and counters, but a `Histogram` can only be fed single
 * observations, so the wait histogram (kept as bucket counts) could not be
 * handed over exactly; one shape for every family keeps the code to one path.
 * Written against prom-client 15 (the optional peer dependency's range).
 */
import type { EngineStats } from '../engine/options.js';
import type { StatusSummary } from '../engine/status-query.js';
import { ConfigError } from '../errors.js';
import type { NameStatus } from '../types.js';
import { metricsSource, MetricsCollector, writeMetrics, type MetricsEventSource } from './metrics.js';
import { formatNumber, type HistogramData, type Labels, type MetricSink, type Sample } from './prometheus.js';

/** The part of a prom-client `Registry` used here (prom-client 15's `Registry` has it). */
export interface PromClientRegistry {
  registerMetric(metric: never): void;
  removeSingleMetric(name: string): void;
  getSingleMetric(name: string): unknown;
}

/** What the bridge reads from an engine (`CertEngine` has all of it). */
export interface PromClientEngine extends MetricsEventSource {
  status(): NameStatus[];
  /** Counts by state and expiry (optional: without it, gauges are computed from `status()`). */
  statusSummary?(): StatusSummary;
  readonly clock: { now(): number };
  /** Memory figures (optional: without them those gauges are not registered). */
  readonly stats?: EngineStats;
}

/** Options of {@link registerPromClient}. */
export interface PromClientOptions {
  /**
   * The collector whose counters and histogram to expose. Pass the admin
   * handler's (`handler.metrics`) for the very values its `/metrics` shows.
   * Default: a new one, attached to the engine here (it counts from now on).
   */
  collector?: MetricsCollector;
  /** For a new collector: the engine's issuer ids (see `MetricsCollectorOptions.issuerIds`). */
  issuerIds?: string[];
  /** For a new collector: count handshakes (default true; see `MetricsCollectorOptions.handshakes`). */
  handshakes?: boolean;
}

/** A registration: its collector, and the way to take the metrics out again. */
export interface PromClientRegistration {
  /** The collector the counters and the histogram are read from. */
  readonly collector: MetricsCollector;
  /** Metric names registered. */
  readonly names: readonly string[];
  /** Remove the metrics from the registry (and detach a collector created here). Idempotent. */
  unregister(): void;
}

type FamilyType = 'counter' | 'gauge' | 'histogram';

/** One value as prom-client's registry prints it. */
interface PromValue {
  value: number;
  labels: Labels;
  metricName?: string;
}

interface Family {
  name: string;
  help: string;
  type: FamilyType;
  values: PromValue[];
}

/** Collects families as prom-client values. */
class FamilyRecorder implements MetricSink {
  readonly families = new Map<string, Family>();

  counter(name: string, help: string, samples: readonly Sample[]): void {
    // No metricName: in OpenMetrics mode the registry renames counters (`_total` off the family, on each sample).
    this.families.set(name, { name, help, type: 'counter', values: samples.map((s) => ({ value: s.value, labels: { ...s.labels } })) });
  }

  gauge(name: string, help: string, samples: readonly Sample[]): void {
    this.families.set(name, { name, help, type: 'gauge', values: samples.map((s) => ({ value: s.value, labels: { ...s.labels } })) });
  }

  histogram(name: string, help: string, series: ReadonlyArray<{ labels?: Labels; data: HistogramData }>): void {
    const values: PromValue[] = [];
    for (const { labels = {}, data } of series) {
      data.buckets.forEach((bound, i) => values.push({ value: data.counts[i] ?? 0, labels: { ...labels, le: formatNumber(bound) }, metricName: `${name}_bucket` }));
      values.push({ value: data.count, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` });
      values.push({ value: data.sum, labels: { ...labels }, metricName: `${name}_sum` });
      values.push({ value: data.count, labels: { ...labels }, metricName: `${name}_count` });
    }
    this.families.set(name, { name, help, type: 'histogram', values });
  }
}

/**
 * Register certstate's metrics in a prom-client registry. Throws
 * `ConfigError` when `registry` is not one, or already holds a metric of the
 * same name (nothing is registered then).
 *
 * @example
 * import { Registry } from 'prom-client';
 * const registry = new Registry();
 * const admin = engine.adminHandler({ token });
 * registerPromClient(engine, registry, { collector: admin.metrics });
 */
export function registerPromClient(engine: PromClientEngine, registry: PromClientRegistry, options: PromClientOptions = {}): PromClientRegistration {
  if (!registry || typeof registry.registerMetric !== 'function' || typeof registry.removeSingleMetric !== 'function' || typeof registry.getSingleMetric !== 'function') {
    throw new ConfigError('registerPromClient: `registry` must be a prom-client Registry');
  }
  const own = options.collector === undefined;
  const collector = options.collector ?? new MetricsCollector({ issuerIds: options.issuerIds, handshakes: options.handshakes ?? true });
  const detach = own ? collector.attach(engine) : () => {};

  // One computation per scrape: the registry asks every metric in the same synchronous turn.
  let scrape: Map<string, Family> | undefined;
  const current = (): Map<string, Family> => {
    if (!scrape) {
      const recorder = new FamilyRecorder();
      writeMetrics(recorder, metricsSource(engine), engine.clock.now(), collector, engine.stats);
      scrape = recorder.families;
      queueMicrotask(() => (scrape = undefined));
    }
    return scrape;
  };

  const registered: Array<{ name: string; metric: object }> = [];
  const unregister = () => {
    for (const { name, metric } of registered.splice(0)) {
      if (registry.getSingleMetric(name) === metric) registry.removeSingleMetric(name);
    }
    detach();
  };
  for (const family of current().values()) {
    const metric = {
      name: family.name,
      help: family.help,
      type: family.type,
      aggregator: 'sum',
      async get() {
        const now = current().get(family.name);
        // `metric.name`: OpenMetrics output renames counters in place.
        return { name: metric.name, help: family.help, type: family.type, aggregator: 'sum', values: now ? now.values : [] };
      },
      reset() {
        // Values are read from the engine and the collector at each scrape: nothing held here.
      },
    };
    if (registry.getSingleMetric(family.name) !== undefined) {
      unregister();
      throw new ConfigError(`registerPromClient: the registry already has a metric named ${family.name}`);
    }
    registry.registerMetric(metric as never);
    registered.push({ name: family.name, metric });
  }
  const names = registered.map((r) => r.name);
  return { collector, names, unregister };
}

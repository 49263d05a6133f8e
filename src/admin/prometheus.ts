/**
 * A tiny writer for the Prometheus text exposition format (version 0.0.4):
 * HELP/TYPE lines, escaped label values, counters, gauges and histograms.
 * It only formats; certstate's metrics are computed in `metrics.ts`.
 */

/** Label names to values. */
export type Labels = Record<string, string>;

/** One sample of a counter or gauge. */
export interface Sample {
  labels?: Labels;
  value: number;
}

/** A histogram's state: cumulative counts per upper bound (seconds, ascending), plus sum and count. */
export interface HistogramData {
  /** Upper bounds, ascending (without `+Inf`). */
  buckets: readonly number[];
  /** Observations `<=` each bound (cumulative), same length as `buckets`. */
  counts: readonly number[];
  sum: number;
  count: number;
}

/** Where metric families go: the text writer below, or the prom-client bridge. */
export interface MetricSink {
  counter(name: string, help: string, samples: readonly Sample[]): unknown;
  gauge(name: string, help: string, samples: readonly Sample[]): unknown;
  histogram(name: string, help: string, series: ReadonlyArray<{ labels?: Labels; data: HistogramData }>): unknown;
}

/** Content type of the format this writer produces. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Builds one exposition text. Each metric family is written once, with all its samples. */
export class PrometheusWriter implements MetricSink {
  readonly #lines: string[] = [];
  readonly #families = new Set<string>();

  /** A counter family (monotonic totals; names should end in `_total`). */
  counter(name: string, help: string, samples: readonly Sample[]): this {
    return this.#family(name, help, 'counter', samples);
  }

  /** A gauge family. */
  gauge(name: string, help: string, samples: readonly Sample[]): this {
    return this.#family(name, help, 'gauge', samples);
  }

  /** A histogram family with one series per label set. */
  histogram(name: string, help: string, series: ReadonlyArray<{ labels?: Labels; data: HistogramData }>): this {
    this.#header(name, help, 'histogram');
    for (const { labels = {}, data } of series) {
      data.buckets.forEach((bound, i) => this.#sample(`${name}_bucket`, { ...labels, le: formatNumber(bound) }, data.counts[i] ?? 0));
      this.#sample(`${name}_bucket`, { ...labels, le: '+Inf' }, data.count);
      this.#sample(`${name}_sum`, labels, data.sum);
      this.#sample(`${name}_count`, labels, data.count);
    }
    return this;
  }

  /** The exposition text (ends with a newline). */
  toString(): string {
    return this.#lines.length ? `${this.#lines.join('\n')}\n` : '';
  }

  #family(name: string, help: string, type: string, samples: readonly Sample[]): this {
    this.#header(name, help, type);
    for (const s of samples) this.#sample(name, s.labels ?? {}, s.value);
    return this;
  }

  #header(name: string, help: string, type: string): void {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    if (this.#families.has(name)) throw new Error(`metric ${name} written twice`);
    this.#families.add(name);
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
  }

  #sample(name: string, labels: Labels, value: number): void {
    const pairs = Object.entries(labels).map(([k, v]) => {
      if (!LABEL_NAME.test(k)) throw new Error(`invalid label name ${JSON.stringify(k)}`);
      return `${k}="${escapeLabelValue(v)}"`;
    });
    this.#lines.push(`${name}${pairs.length ? `{${pairs.join(',')}}` : ''} ${formatNumber(value)}`);
  }
}

/** Escape a label value: backslash, double quote and line feed, as the format requires. */
export function escapeLabelValue(value: string): string {
  return String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Numbers as Prometheus writes them (`+Inf`, `-Inf`, `NaN`). */
export function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

/** A histogram accumulator with fixed bucket bounds. */
export class Histogram {
  readonly buckets: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(buckets: readonly number[]) {
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.#counts = this.buckets.map(() => 0);
  }

  /** Record one observation. */
  observe(value: number): void {
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) this.#counts[i]!++;
    this.#sum += value;
    this.#count++;
  }

  /** A snapshot for the writer. */
  data(): HistogramData {
    return { buckets: this.buckets, counts: [...this.#counts], sum: this.#sum, count: this.#count };
  }
}

/**
 * Summaries of repeated measurements. These machines are noisy (2 shared
 * cores), so every bench repeats, shows the spread, and compares against a
 * baseline measured in the same run rather than against absolute numbers.
 */

export interface Summary {
  runs: number;
  min: number;
  median: number;
  max: number;
  values: number[];
}

/** min / median / max of `values` (the median of an even count is the mean of the middle two). */
export function summarize(values: number[]): Summary {
  if (values.length === 0) return { runs: 0, min: NaN, median: NaN, max: NaN, values: [] };
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { runs: values.length, min: sorted[0]!, median, max: sorted[sorted.length - 1]!, values };
}

/** The `p`-th percentile (0..100) by nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/**
 * Per-run ratios `subject[i] / baseline[i]`: pairing each run with the
 * baseline measured next to it cancels drift (thermal, neighbours) that a
 * ratio of medians would keep.
 */
export function pairedRatios(subject: number[], baseline: number[]): Summary {
  const n = Math.min(subject.length, baseline.length);
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) ratios.push(subject[i]! / baseline[i]!);
  return summarize(ratios);
}

/** `a ÷ b` for one-shot measurements, as a one-value summary. */
export function ratio(a: number, b: number): Summary {
  return summarize([a / b]);
}

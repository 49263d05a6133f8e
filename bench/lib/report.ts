/**
 * What every bench prints and writes: a table on stdout, and the same data
 * as JSON in bench/results/<bench>.json with the machine it ran on and the
 * exact command, so a number in BENCHMARKS.md can always be traced back.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { engineModulePath } from './engine-module.js';
import { REPO_DIR, RESULTS_DIR } from './paths.js';
import type { Summary } from './stats.js';


/** The 1-minute load average when this bench started (module load time). */
const LOAD_AT_START = os.loadavg()[0]!;

export interface MachineFacts {
  nproc: number;
  cpuModel: string;
  node: string;
  platform: string;
  totalMemoryMb: number;
  /** 1-minute load average when the bench started and ended: other work on a shared machine skews timings. */
  loadAverage: number[];
}

export function machineFacts(): MachineFacts {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    // /proc/cpuinfo is what BENCHMARKS.md quotes; os.cpus() may abbreviate it.
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpuModel;
  } catch {
    // not Linux: keep os.cpus()
  }
  return {
    nproc: os.availableParallelism(),
    cpuModel,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    totalMemoryMb: Math.round(os.totalmem() / 2 ** 20),
    loadAverage: [LOAD_AT_START],
  };
}

/** One row of the bar (BENCHMARKS.md, "Against the bar"), judged by this run. */
export interface BarVerdict {
  what: string;
  bar: string;
  measured: string;
  met: boolean | 'n/a';
  note?: string;
}

export interface BenchResult {
  bench: string;
  /** The engine module measured (src/engine/engine.ts unless CERTSTATE_BENCH_ENGINE names a private copy). */
  engine?: string;
  /** The commit measured, and whether src/ had uncommitted changes (other engineers share this tree). */
  git?: { commit: string; srcDirty: boolean };
  /** Bumped when the JSON shape changes; test/bench.test.ts checks it. */
  schema: 1;
  command: string;
  startedAt: string;
  durationMs: number;
  machine: MachineFacts;
  options: Record<string, unknown>;
  /** Bench-specific measurements: every timing as a `Summary` (runs, min, median, max). */
  results: Record<string, unknown>;
  bars: BarVerdict[];
  /** Why a part was skipped (e.g. Pebble or the ACME issuer missing). */
  skipped?: string[];
}

/** What a bench measured; `writeResult` adds how, where and when. */
export interface BenchReport extends Pick<BenchResult, 'bench' | 'options' | 'results' | 'bars' | 'skipped'> {
  startedAt: Date;
}

/**
 * Write `bench/results/<bench>.json` (or `file`, from `--json`) and return the path:
 * the report with the command line, duration, machine facts (load average at the
 * end too), engine module and commit that make it reproducible.
 */
export async function writeResult(report: BenchReport, file?: string): Promise<string> {
  const { startedAt, skipped, ...measured } = report;
  const result: BenchResult = {
    ...measured,
    schema: 1,
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    durationMs: Date.now() - startedAt.getTime(),
    machine: machineFacts(),
    ...(skipped?.length ? { skipped } : {}),
    engine: path.relative(REPO_DIR, engineModulePath()),
    git: gitState(),
  };
  result.machine.loadAverage.push(os.loadavg()[0]!);
  file ||= path.join(RESULTS_DIR, `${result.bench}.json`);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

/** The command line that reproduces this run. */
export function commandLine(): string {
  const script = path.relative(REPO_DIR, process.argv[1] ?? '');
  const engine = process.env.CERTSTATE_BENCH_ENGINE ? [`CERTSTATE_BENCH_ENGINE=${process.env.CERTSTATE_BENCH_ENGINE}`] : [];
  return [...engine, 'node --import tsx', script, ...process.argv.slice(2)].join(' ');
}

/** Format a number with a sensible precision for tables. */
export function fmt(value: number, digits = 3): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(Math.max(0, digits - 3));
  if (abs >= 10) return value.toFixed(Math.max(0, digits - 2));
  return value.toFixed(digits - 1 > 0 ? digits - 1 : 0);
}

/** `median (min–max)` of a summary, scaled by `scale`. */
export function spread(s: Summary, scale = 1, digits = 3): string {
  if (s.runs === 0) return '—';
  if (s.runs === 1) return fmt(s.median * scale, digits);
  return `${fmt(s.median * scale, digits)} (${fmt(s.min * scale, digits)}–${fmt(s.max * scale, digits)})`;
}

/** Print a plain-text table (also valid Markdown, so it can be pasted into BENCHMARKS.md). */
export function printTable(title: string, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n### ${title}\n`);
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const row of rows) console.log(line(row));
}

/** Print the bar verdicts as a table. */
export function printBars(bars: BarVerdict[]): void {
  if (bars.length === 0) return;
  printTable(
    'Against the bar (BENCHMARKS.md)',
    ['what', 'bar', 'measured', 'met'],
    bars.map((b) => [b.what, b.bar, b.measured, b.met === 'n/a' ? 'n/a' : b.met ? 'met' : `NOT met${b.note ? `: ${b.note}` : ''}`]),
  );
}

/**
 * Node flags that write CPU profiles of a child process into
 * bench/results/profiles/<name>-<time>/ (when `enabled`). One directory per
 * run, not a fixed file name: every thread (tsx runs a loader thread) writes
 * its own profile, and a fixed name would let them overwrite each other. The
 * main thread's is the largest file; read it with bench/tools/cpuprofile-top.ts.
 */
export function profileFlags(enabled: boolean, name: string): string[] {
  if (!enabled) return [];
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return ['--cpu-prof', `--cpu-prof-dir=${path.join(RESULTS_DIR, 'profiles', `${name}-${stamp}`)}`];
}

function gitState(): { commit: string; srcDirty: boolean } {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_DIR, encoding: 'utf8', timeout: 10_000 }).trim();
    return { commit: git('rev-parse', 'HEAD'), srcDirty: git('status', '--porcelain', '--', 'src').length > 0 };
  } catch {
    return { commit: 'unknown', srcDirty: true };
  }
}

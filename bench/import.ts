/**
 * bench:import — what `import 'certstate'` costs a process that uses the
 * local CA: fresh Node processes, each importing the compiled package (as
 * installed from npm: `tsc -p tsconfig.build.json`, no tsx) and creating an
 * engine with `localCaIssuer()`, against processes that only
 * `import('node:tls')`. Runs alternate, and each is paired with the
 * baseline run next to it (cost = subject − baseline, ratio = subject ÷
 * baseline), so neighbours on a shared machine skew both sides alike. Both
 * wall time and the process's CPU time (user + system, as the process itself
 * reports it at the end) are measured: on a loaded machine the wall time
 * mostly says how long the process waited for a core, the CPU time what
 * starting it cost; the bar is judged on the CPU time.
 *
 * Each subject process also reports which heavy packages it loaded: the
 * ACME client (acme-client and its axios/asn1/x509 tree), node-forge and
 * pino are loaded only when something uses them, never by the import.
 *
 *   node --import tsx bench/import.ts [--runs 41]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseFlags } from './lib/args.js';
import { REPO_DIR } from './lib/paths.js';
import { fmt, printBars, printTable, spread, writeResult, type BarVerdict } from './lib/report.js';
import { pairedRatios, summarize } from './lib/stats.js';

const flags = parseFlags('bench/import.ts', {
  runs: { default: 41, help: 'fresh processes per side (the median is reported)' },
  entry: { default: '', help: 'an already compiled dist/index.js to measure (default: compile src/ into a temporary directory)' },
  json: { default: '', help: 'write the JSON result here instead of bench/results/import.json' },
});

const BAR_COST_MS = 150;
/** Packages that must not be loaded by the import (directory names under node_modules). */
const HEAVY = ['acme-client', 'axios', 'node-forge', 'pino'] as const;

const startedAt = new Date();

/** Compile src/ as `npm run build` does, into a directory inside the checkout (so its imports resolve from node_modules). */
function compile(): { entry: string; cleanup: () => void } {
  const outDir = path.join(REPO_DIR, '.test-artifacts', `import-bench-${process.pid}`);
  mkdirSync(path.dirname(outDir), { recursive: true });
  execFileSync(process.execPath, [path.join(REPO_DIR, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir], { cwd: REPO_DIR, stdio: 'inherit' });
  return { entry: path.join(outDir, 'index.js'), cleanup: () => rmSync(outDir, { recursive: true, force: true }) };
}

/** The subject: import the package, create an engine on the local CA (not started: start-up is not import), list the heavy packages loaded. */
function subjectScript(entry: string): string {
  return `
    const m = await import(${JSON.stringify(pathToFileURL(entry).href)});
    m.createCertEngine({ storage: m.memoryStorage(), issuers: [m.localCaIssuer()], names: ['bench.localhost'] });
    const { createRequire } = await import('node:module');
    const loaded = Object.keys(createRequire(import.meta.url).cache);
    const heavy = ${JSON.stringify(HEAVY)}.filter((p) => loaded.some((f) => f.includes('/node_modules/' + p + '/')));
    process.stdout.write(JSON.stringify({ heavy, ${CPU} }));
  `;
}

/** The process's own CPU time so far, ms (user + system, every thread). */
const CPU = `cpuMs: (process.cpuUsage().user + process.cpuUsage().system) / 1000`;
const BASELINE = `await import('node:tls'); process.stdout.write(JSON.stringify({ heavy: [], ${CPU} }));`;

/** Wall time of one fresh process running `script`, ms, with its CPU time and what it loaded. */
function timeProcess(script: string): { ms: number; cpuMs: number; heavy: string[] } {
  const t0 = process.hrtime.bigint();
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_DIR, encoding: 'utf8', timeout: 60_000 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, ...(JSON.parse(output) as { cpuMs: number; heavy: string[] }) };
}

const built = flags.entry ? { entry: path.resolve(flags.entry), cleanup: () => {} } : compile();
try {
  const subject = subjectScript(built.entry);
  // One unmeasured pass each: the first process after a build pays for a cold page cache.
  timeProcess(BASELINE);
  timeProcess(subject);
  const baselineRuns: ReturnType<typeof timeProcess>[] = [];
  const subjectRuns: ReturnType<typeof timeProcess>[] = [];
  const heavyLoaded = new Set<string>();
  for (let i = 0; i < flags.runs; i++) {
    baselineRuns.push(timeProcess(BASELINE));
    const run = timeProcess(subject);
    subjectRuns.push(run);
    for (const p of run.heavy) heavyLoaded.add(p);
  }
  const side = (runs: ReturnType<typeof timeProcess>[], field: 'ms' | 'cpuMs') => runs.map((r) => r[field]);
  const paired = (field: 'ms' | 'cpuMs') => ({
    baseline: summarize(side(baselineRuns, field)),
    subject: summarize(side(subjectRuns, field)),
    cost: summarize(side(subjectRuns, field).map((v, i) => v - side(baselineRuns, field)[i]!)),
    ratio: pairedRatios(side(subjectRuns, field), side(baselineRuns, field)),
  });
  const wall = paired('ms');
  const cpu = paired('cpuMs');
  const cost = cpu.cost;
  const ratio = cpu.ratio;

  printTable('import cost (fresh processes, ms; median (min–max))', ['process', 'measure', 'time', 'cost over baseline', 'ratio'], [
    ["import('node:tls')", 'CPU', spread(cpu.baseline), '—', '1'],
    ["import('certstate') + localCaIssuer engine", 'CPU', spread(cpu.subject), spread(cpu.cost), spread(cpu.ratio)],
    ["import('node:tls')", 'wall', spread(wall.baseline), '—', '1'],
    ["import('certstate') + localCaIssuer engine", 'wall', spread(wall.subject), spread(wall.cost), spread(wall.ratio)],
  ]);
  console.log(`\nheavy packages loaded by the import: ${heavyLoaded.size ? [...heavyLoaded].join(', ') : 'none'} (watched: ${HEAVY.join(', ')})`);

  const bars: BarVerdict[] = [
    {
      what: "`import 'certstate'` with the local CA",
      bar: `≤ ${BAR_COST_MS} ms over import('node:tls')`,
      measured: `${fmt(cost.median)} ms CPU (×${fmt(ratio.median)} of a node:tls-only start-up; wall ${fmt(wall.cost.median)} ms; ${flags.runs} runs)`,
      met: cost.median <= BAR_COST_MS && heavyLoaded.size === 0,
      ...(heavyLoaded.size ? { note: `loaded ${[...heavyLoaded].join(', ')}` } : {}),
    },
  ];
  printBars(bars);
  const file = await writeResult(
    {
      bench: 'import',
      startedAt,
      options: { runs: flags.runs, entry: flags.entry || '(compiled from src/)' },
      results: {
        baselineMs: cpu.baseline,
        subjectMs: cpu.subject,
        costMs: cost,
        ratio,
        wall: { baselineMs: wall.baseline, subjectMs: wall.subject, costMs: wall.cost, ratio: wall.ratio },
        heavyLoaded: [...heavyLoaded],
      },
      bars,
    },
    flags.json || undefined,
  );
  console.log(`\nresult: ${path.relative(process.cwd(), file)}`);
} finally {
  built.cleanup();
}

/**
 * bench:scale — N managed names with certificates in file storage (or, with
 * `--storage postgres`, in PostgreSQL): how long
 * until the engine serves the first and the last name, memory per name, CPU
 * while idle, and the cost of `status()`. Baseline, in the same run: the
 * same files read with plain fs (64 in flight) and JSON.parse'd into a Map.
 * The engine's issuer answers renewal-information (ARI) requests, as an ACME
 * CA with ARI would: the engine asks about every name, spread over its
 * recheck interval through the one wake heap (no timer per name). Status is
 * timed as `status()` (an object per name) and as the calls that build none:
 * `statusPage()` (first and last page, a walk by pages), `statusSummary()`,
 * the `statuses()` async walk.
 *
 * Each side runs in its own process (memory and CPU are then its own). The
 * storage directory is a fresh temp dir of hard links into the cached
 * dataset (bench/.cache/dataset), minted on first use. With
 * `--storage postgres` the same units are rows of a table of the bench's own,
 * seeded once per dataset and name count (scale/postgres.ts), and the
 * baseline is a plain `pg` loader reading every row into a Map; the start-up
 * index is then the storage's `<table>_index` (cleared for a cold start).
 *
 *   node --import tsx bench/scale.ts [--names 10000] [--idle-seconds 60] [--runs 1] [--storage file|postgres]
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { parseFlags } from './lib/args.js';
import { forkTs } from './lib/children.js';
import { ensureDataset, fileStorageDir, nameOf, touchVersions } from './lib/dataset.js';
import { fmt, profileFlags, printBars, printTable, spread, writeResult, type BarVerdict } from './lib/report.js';
import { pairedRatios, summarize, type Summary } from './lib/stats.js';
import type { IdleReply, LoadReply, StatusReply, Where } from './scale/child.js';
import { BENCH_POSTGRES_URL, clearIndex, seedPostgres } from './scale/postgres.js';

const flags = parseFlags('bench/scale.ts', {
  names: { default: 10_000, help: 'managed names (100000 for the bar)' },
  'idle-seconds': { default: 60, help: 'length of the idle period whose CPU is measured' },
  runs: { default: 1, help: 'repetitions (each loads both sides afresh)' },
  'status-calls': { default: 5, help: 'status() calls timed per run' },
  sample: { default: 1000, help: 'names (evenly spread) whose first handshake is asked for at start, besides the first and the last' },
  'heap-mb': { default: 8192, help: '--max-old-space-size of the child processes' },
  profile: { default: false, help: 'write a CPU profile of the engine process to bench/results/profiles/' },
  json: { default: '', help: 'write the JSON result here instead of bench/results/scale.json' },
  ari: { default: true, help: 'the issuer answers renewal-information (ARI) requests' },
  'node-flags': { default: '', help: 'extra node/V8 flags for both child processes, space-separated (e.g. --no-memory-reducer)' },
  index: { default: true, help: 'the start-up index (file storage, PostgreSQL): a cold start writes it, then a warm start (a fresh process, as a restarted server) is measured; false: startupIndex off, one start' },
  cold: { default: true, help: 'with --index: measure a cold engine start (no index yet; it writes the index) before the warm one; false: the bench writes the index itself (one versioned read per name) and only the warm start is measured' },
  storage: { default: 'file', help: `where the names are: file, or postgres (${BENCH_POSTGRES_URL}, or CERTSTATE_BENCH_POSTGRES_URL; a table of the bench's own, seeded once)` },
  files: { default: 'copies', help: "the storage directory's files: 'copies' (inodes of their own: the warm start's index lines match the files unless --stale) or 'links' (hard links into the shared dataset: fast to make, but any other link to the same names, by any bench or test on the machine, changes their ctime and so makes index lines stale)" },
  stale: { default: false, help: "with --index: after the index is written, change every file's version (its ctime, content untouched: a restore from backup) so that the warm start's check finds every line stale and re-reads every file: the worst case" },
});
if (flags.files !== 'copies' && flags.files !== 'links') {
  console.error(`bench/scale.ts: --files must be 'copies' or 'links', got ${JSON.stringify(flags.files)}`);
  process.exit(2);
}
if (flags.stale && flags.files !== 'copies') {
  // A chmod of a link changes the shared dataset inode: every other directory of links would see its files changed.
  console.error('bench/scale.ts: --stale needs --files copies (it would change the shared dataset\'s files)');
  process.exit(2);
}

if (flags.storage !== 'file' && flags.storage !== 'postgres') {
  console.error(`bench/scale.ts: --storage is file or postgres, got ${JSON.stringify(flags.storage)}`);
  process.exit(2);
}
const onPostgres = flags.storage === 'postgres';
/** The start-up index (file storage's index file, PostgreSQL's `<table>_index`). */
const useIndex = flags.index;
const storageLabel = onPostgres ? 'PostgreSQL' : 'file storage';
const baselineLabel = onPostgres ? 'plain pg → Map' : 'plain fs → Map';

const BAR_START_S = 10;
const BAR_RSS_MB = 1024;
// The million-name bar (issue 14): any name served within 1 s of start(), every name read within 60 s, 1.5 GB.
const BAR_ANY_NAME_S = 1;
const BAR_ALL_READ_S = 60;
const BAR_RSS_MILLION_MB = 1536;
const BAR_IDLE_MS_PER_MINUTE = 60;
// Every name read by the engine within this many times the plain-fs loader's time (issue 14).
const BAR_STARTUP_RATIO = 1.5;

interface Run {
  baseline: LoadReply;
  /** The measured engine: the warm start from the index (with --index), else the only start. */
  engine: LoadReply;
  /** With --index --cold: the cold start (no index yet), which wrote the index. */
  coldEngine?: LoadReply;
  /** With --index --cold false: the bench's own write of the index, ms. */
  indexPrepMs?: number;
  baselineIdle: IdleReply;
  engineIdle: IdleReply;
  baselineStatus: Summary;
  engineStatus: Summary;
  engineCalls: StatusReply;
}

async function oneRun(where: Where, count: number): Promise<Run> {
  const { dir } = where;
  const nodeFlags = [`--max-old-space-size=${flags['heap-mb']}`, ...flags['node-flags'].split(' ').filter(Boolean)];
  const base = forkTs(new URL('./scale/child.ts', import.meta.url), [], nodeFlags);
  let eng: ReturnType<typeof forkTs> | undefined;
  const says = (what: string, r: LoadReply) =>
    console.error(
      `  ${what}: first name served after ${(r.firstMs / 1000).toFixed(2)} s, last after ${(r.lastMs / 1000).toFixed(2)} s, ` +
        `all ${r.sample?.count} sampled after ${((r.sampleMs ?? 0) / 1000).toFixed(2)} s; start() resolved after ${(r.allMs / 1000).toFixed(2)} s` +
        (r.indexWrittenMs === undefined ? '' : `; index checked and written after ${(r.indexWrittenMs / 1000).toFixed(2)} s`),
    );
  try {
    // Loads run one after the other (each wants both cores' worth of disk and CPU),
    // after one unmeasured pass over the files so that neither side pays for a cold page cache.
    await base.call('warm', { ...where, count }, 30 * 60_000);
    const baseline = await base.call<LoadReply>('baseline', { ...where, count }, 30 * 60_000);
    console.error(`  baseline: all ${count} ${onPostgres ? 'rows' : 'files'} in a Map after ${(baseline.allMs / 1000).toFixed(2)} s`);
    const engineArgs = { ...where, count, sample: flags.sample, ari: flags.ari, index: useIndex };
    let coldEngine: LoadReply | undefined;
    let indexPrepMs: number | undefined;
    if (useIndex && flags.cold) {
      // A cold start (no index yet: an earlier run's is removed): measured, and it writes the index; then the process goes.
      if (where.pg) await clearIndex(where.pg.url, where.pg.table);
      else await rm(path.join(dir, '~index'), { recursive: true, force: true });
      const cold = forkTs(new URL('./scale/child.ts', import.meta.url), [], nodeFlags);
      try {
        coldEngine = await cold.call<LoadReply>('engine', engineArgs, 60 * 60_000);
        says('engine, cold start (no index)', coldEngine);
        await cold.call('stop', undefined, 600_000).catch(() => undefined);
      } finally {
        await cold.close();
      }
    } else if (useIndex) {
      indexPrepMs = (await base.call<{ ms: number }>('writeIndex', { ...where, count }, 60 * 60_000)).ms;
      console.error(`  index written by the bench in ${(indexPrepMs / 1000).toFixed(1)} s`);
    }
    if (flags.index && flags.stale) {
      const t0 = performance.now();
      await touchVersions(dir, Array.from({ length: count }, (_, i) => nameOf(i)));
      console.error(`  every file's version changed (--stale) in ${((performance.now() - t0) / 1000).toFixed(1)} s: the check re-reads them all`);
    }
    eng = forkTs(new URL('./scale/child.ts', import.meta.url), [], [...nodeFlags, ...profileFlags(flags.profile, 'scale-engine')]);
    const engine = await eng.call<LoadReply>('engine', engineArgs, 60 * 60_000);
    says(useIndex ? 'engine, warm start (from the index)' : 'engine', engine);
    if (useIndex) {
      console.error(
        `  the check after start-up re-read ${engine.checkReads} files (${flags.stale ? 'worst case: every line made stale' : `realistic: nothing changed since the index${flags.files === 'links' ? ', unless another link to the dataset moved ctimes' : ''}`}); ` +
          `RSS during the check: peak ${engine.checkPeakRssMb?.toFixed(0)} MB (sampled every 50 ms, no GC), ${engine.indexRssMb?.toFixed(0)} MB after GC once the index was written`,
      );
    }
    // Idle side by side: neither does anything, so they do not disturb each other.
    // Generous: an engine that is not idle at all (e.g. retrying names that failed to load) stretches the period.
    const idleMs = flags['idle-seconds'] * 3000 + 300_000;
    const [baselineIdle, engineIdle] = await Promise.all([
      base.call<IdleReply>('idle', { seconds: flags['idle-seconds'] }, idleMs),
      eng.call<IdleReply>('idle', { seconds: flags['idle-seconds'] }, idleMs),
    ]);
    const baselineStatus = await base.call<Summary>('status', { calls: flags['status-calls'] });
    const engineCalls = await eng.call<StatusReply>('engineStatus', { calls: flags['status-calls'], count }, 30 * 60_000);
    const engineStatus = engineCalls.full;
    await eng.call('stop', undefined, 600_000).catch(() => undefined);
    return { baseline, engine, coldEngine, indexPrepMs, baselineIdle, engineIdle, baselineStatus, engineStatus, engineCalls };
  } finally {
    await Promise.all([base.close(), eng?.close()]);
  }
}

const perName = (r: LoadReply, field: 'rssMb' | 'heapUsedMb') => ((r.after[field] - r.before[field]) * 2 ** 20) / flags.names;
/** When the engine served: the last of the first name, the last name and the whole sample. */
const servingMs = (r: LoadReply) => Math.max(r.firstMs, r.lastMs, r.sampleMs ?? 0);
/** Idle CPU in ms per minute: over the whole period, or steady (the median window, past V8's post-load GCs). */
const idlePerMinute = (r: IdleReply) => (r.cpuMs / r.seconds) * 60;
const steadyIdlePerMinute = (r: IdleReply) => (summarize(r.windowsCpuMs).median / r.windowSeconds) * 60;

async function main(): Promise<void> {
  const startedAt = new Date();
  const dataset = await ensureDataset(flags.names);
  // PostgreSQL: the bench's own table, seeded once per dataset and count; file storage: a fresh directory of copies or links.
  const table = onPostgres ? await seedPostgres(dataset, flags.names, (line) => console.error(line)) : undefined;
  const t0 = performance.now();
  const storageDir = onPostgres ? undefined : await fileStorageDir(dataset, dataset.names, { copies: flags.files === 'copies' });
  if (storageDir) console.error(`scale: ${flags.names} files ${flags.files === 'copies' ? 'copied' : 'linked'} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const where: Where = table ? { dir: '', pg: { url: BENCH_POSTGRES_URL, table } } : { dir: storageDir!.dir };
  const runs: Run[] = [];
  try {
    for (let r = 0; r < flags.runs; r++) {
      console.error(`scale: run ${r + 1}/${flags.runs} with ${flags.names} names in ${storageLabel} (idle ${flags['idle-seconds']} s)…`);
      runs.push(await oneRun(where, flags.names));
    }
  } finally {
    await storageDir?.dispose();
  }

  const results = buildResults(runs);
  report(results);
  const verdicts = bars(results);
  printBars(verdicts);
  const file = await writeResult(
    {
      bench: 'scale',
      startedAt,
      options: { ...flags },
      results,
      bars: verdicts,
    },
    flags.json || undefined,
  );
  console.error(`\nwrote ${file}`);
}

function buildResults(runs: Run[]) {
  const s = (f: (r: Run) => number) => summarize(runs.map(f));
  return {
    engine: {
      firstServedMs: s((r) => r.engine.firstMs),
      lastServedMs: s((r) => r.engine.lastMs),
      sampleServedMs: s((r) => r.engine.sampleMs ?? 0),
      sampleP50Ms: s((r) => r.engine.sample?.p50Ms ?? 0),
      sampleP95Ms: s((r) => r.engine.sample?.p95Ms ?? 0),
      servingMs: s((r) => servingMs(r.engine)),
      stats: runs.map((r) => r.engine.stats),
      startResolvedMs: s((r) => r.engine.allMs),
      startCpuMs: s((r) => r.engine.cpuMs),
      rssMb: s((r) => r.engine.after.rssMb),
      heapUsedMb: s((r) => r.engine.after.heapUsedMb),
      rssPerNameBytes: s((r) => perName(r.engine, 'rssMb')),
      heapPerNameBytes: s((r) => perName(r.engine, 'heapUsedMb')),
      idleCpuMsPerMinute: s((r) => idlePerMinute(r.engineIdle)),
      steadyIdleCpuMsPerMinute: s((r) => steadyIdlePerMinute(r.engineIdle)),
      statusMs: s((r) => r.engineStatus.median),
      statusFirstPageMs: s((r) => r.engineCalls.firstPage.median),
      statusLastPageMs: s((r) => r.engineCalls.lastPage.median),
      statusPagedWalkMs: s((r) => r.engineCalls.pagedWalk.median),
      statusPages: s((r) => r.engineCalls.pages),
      statusSummaryMs: s((r) => r.engineCalls.summary.median),
      statusAsyncWalkMs: s((r) => r.engineCalls.asyncWalk.median),
      ariRequestsAtStart: s((r) => r.engine.ariRequests ?? 0),
      ariRequestsPerIdleMinute: s((r) => ((r.engineIdle.ariRequests ?? 0) / r.engineIdle.seconds) * 60),
      timers: s((r) => r.engine.timers ?? 0),
      notServing: s((r) => r.engine.notServing ?? 0),
      states: runs.map((r) => r.engine.states),
      errors: runs.flatMap((r) => r.engine.errors ?? []).slice(0, 5),
      indexWrittenMs: s((r) => r.engine.indexWrittenMs ?? 0),
      indexRssMb: s((r) => r.engine.indexRssMb ?? 0),
      /** Files the check after start-up read (index lines found stale); 0 in the realistic case, every name with --stale. */
      checkReads: s((r) => r.engine.checkReads ?? 0),
      /** Highest RSS sampled (every 50 ms, no GC) from start() resolved until the index was written. */
      checkPeakRssMb: s((r) => r.engine.checkPeakRssMb ?? 0),
    },
    /** With --index --cold: the cold start (no index yet) that wrote the index. */
    cold: runs.every((r) => r.coldEngine)
      ? {
          firstServedMs: s((r) => r.coldEngine!.firstMs),
          lastServedMs: s((r) => r.coldEngine!.lastMs),
          sampleServedMs: s((r) => r.coldEngine!.sampleMs ?? 0),
          startResolvedMs: s((r) => r.coldEngine!.allMs),
          startCpuMs: s((r) => r.coldEngine!.cpuMs),
          rssMb: s((r) => r.coldEngine!.after.rssMb),
          indexWrittenMs: s((r) => r.coldEngine!.indexWrittenMs ?? 0),
          notServing: s((r) => r.coldEngine!.notServing ?? 0),
          startResolvedRatio: pairedRatios(runs.map((r) => r.coldEngine!.allMs), runs.map((r) => r.baseline.allMs)),
          startCpuRatio: pairedRatios(runs.map((r) => r.coldEngine!.cpuMs), runs.map((r) => r.baseline.cpuMs)),
        }
      : undefined,
    indexPrepMs: s((r) => r.indexPrepMs ?? 0),
    baseline: {
      firstReadMs: s((r) => r.baseline.firstMs),
      lastReadMs: s((r) => r.baseline.lastMs),
      allReadMs: s((r) => r.baseline.allMs),
      allReadCpuMs: s((r) => r.baseline.cpuMs),
      rssMb: s((r) => r.baseline.after.rssMb),
      heapUsedMb: s((r) => r.baseline.after.heapUsedMb),
      rssPerNameBytes: s((r) => perName(r.baseline, 'rssMb')),
      heapPerNameBytes: s((r) => perName(r.baseline, 'heapUsedMb')),
      idleCpuMsPerMinute: s((r) => idlePerMinute(r.baselineIdle)),
      steadyIdleCpuMsPerMinute: s((r) => steadyIdlePerMinute(r.baselineIdle)),
      statusMs: s((r) => r.baselineStatus.median),
    },
    ratios: {
      lastServed: pairedRatios(runs.map((r) => r.engine.lastMs), runs.map((r) => r.baseline.allMs)),
      startResolved: pairedRatios(runs.map((r) => r.engine.allMs), runs.map((r) => r.baseline.allMs)),
      startCpu: pairedRatios(runs.map((r) => r.engine.cpuMs), runs.map((r) => r.baseline.cpuMs)),
      indexWritten: pairedRatios(runs.map((r) => r.engine.indexWrittenMs ?? 0), runs.map((r) => r.baseline.allMs)),
      firstServed: pairedRatios(runs.map((r) => r.engine.firstMs), runs.map((r) => r.baseline.firstMs)),
      heapPerName: pairedRatios(runs.map((r) => perName(r.engine, 'heapUsedMb')), runs.map((r) => perName(r.baseline, 'heapUsedMb'))),
      status: pairedRatios(runs.map((r) => r.engineStatus.median), runs.map((r) => r.baselineStatus.median)),
    },
    runs,
  };
}

type Results = ReturnType<typeof buildResults>;

function report(r: Results): void {
  const e = r.engine;
  const b = r.baseline;
  const sec = (x: Summary) => spread(x, 1e-3);
  printTable(
    `${flags.names.toLocaleString('en-US')} managed names in ${storageLabel} (median (min–max) of ${flags.runs} run(s))`,
    ['measure', 'certstate', `baseline: ${baselineLabel}`, 'certstate ÷ baseline'],
    [
      ['first name served / read, s', sec(e.firstServedMs), sec(b.firstReadMs), spread(r.ratios.firstServed)],
      ['last name served (or refused) / all read, s', sec(e.lastServedMs), sec(b.allReadMs), spread(r.ratios.lastServed)],
      [`sample of ${flags.sample} names (asked at start): all served, s`, sec(e.sampleServedMs), '—', '—'],
      ['…each name\'s first answer: median / p95, ms', `${spread(e.sampleP50Ms)} / ${spread(e.sampleP95Ms)}`, '—', '—'],
      ['start() resolved (every name read), s', sec(e.startResolvedMs), sec(b.allReadMs), spread(r.ratios.startResolved)],
      ['…CPU until then (user + system, all threads), s', sec(e.startCpuMs), sec(b.allReadCpuMs), spread(r.ratios.startCpu)],
      ['names not serving after start', spread(e.notServing, 1, 1), '0', '—'],
      ...(useIndex
        ? [
            ['…every name slept from the index checked against its file (stat) and the index written again, s', sec(e.indexWrittenMs), sec(b.allReadMs), spread(r.ratios.indexWritten)],
            [`…files the check re-read (${flags.stale ? 'worst case: --stale' : 'realistic'}, ${onPostgres ? 'PostgreSQL' : `files: ${flags.files}`})`, spread(e.checkReads, 1, 1), '—', '—'],
            ['…RSS during the check: peak (sampled, no GC) / after GC once written, MB', `${spread(e.checkPeakRssMb)} / ${spread(e.indexRssMb)}`, '—', '—'],
          ]
        : []),
      ...(r.cold
        ? [
            ['cold start (no index yet): first / last name served, s', `${sec(r.cold.firstServedMs)} / ${sec(r.cold.lastServedMs)}`, sec(b.firstReadMs), '—'],
            ['…start() resolved (every name read), s', sec(r.cold.startResolvedMs), sec(b.allReadMs), spread(r.cold.startResolvedRatio)],
            ['…CPU until then, s', sec(r.cold.startCpuMs), sec(b.allReadCpuMs), spread(r.cold.startCpuRatio)],
            ['…the index written, s', sec(r.cold.indexWrittenMs), '—', '—'],
            ['…RSS after start, MB; names not serving', `${spread(r.cold.rssMb)}; ${spread(r.cold.notServing, 1, 1)}`, '—', '—'],
          ]
        : []),
      ...(r.indexPrepMs.max > 0 ? [['the index written by the bench (no cold start measured), s', sec(r.indexPrepMs), '—', '—']] : []),
      ['RSS after start (after GC), MB', spread(e.rssMb), spread(b.rssMb), '—'],
      ['heap used (after GC), MB', spread(e.heapUsedMb), spread(b.heapUsedMb), '—'],
      ['heap per name, bytes', spread(e.heapPerNameBytes, 1, 4), spread(b.heapPerNameBytes, 1, 4), spread(r.ratios.heapPerName)],
      ['RSS per name, bytes', spread(e.rssPerNameBytes, 1, 4), spread(b.rssPerNameBytes, 1, 4), '—'],
      [`CPU while idle, ms per minute (all ${flags['idle-seconds']} s)`, spread(e.idleCpuMsPerMinute), spread(b.idleCpuMsPerMinute), '—'],
      ['CPU while idle, ms per minute (steady: median of 6 windows)', spread(e.steadyIdleCpuMsPerMinute), spread(b.steadyIdleCpuMsPerMinute), '—'],
      ['status() of every name, ms', spread(e.statusMs), spread(b.statusMs), spread(r.ratios.status)],
      ['statusPage({ limit: 100 }): first page / last page, ms', `${spread(e.statusFirstPageMs)} / ${spread(e.statusLastPageMs)}`, '—', '—'],
      [`every name by pages of 10,000 (${e.statusPages.median} pages), ms`, spread(e.statusPagedWalkMs), '—', '—'],
      ['statusSummary() (counts by state + expiry pass), ms', spread(e.statusSummaryMs), '—', '—'],
      ['for await … of statuses(): every name, ms', spread(e.statusAsyncWalkMs), '—', '—'],
      [`ARI requests until start() resolved / per idle minute${flags.ari ? '' : ' (ARI off)'}`, `${spread(e.ariRequestsAtStart, 1, 1)} / ${spread(e.ariRequestsPerIdleMinute, 1, 1)}`, '—', '—'],
      ['timers held by the process after start', spread(e.timers, 1, 1), '—', '—'],
    ],
  );
  console.log(`\nstates after start: ${JSON.stringify(e.states)}`);
  console.log(`engine.stats after start: ${JSON.stringify(e.stats)}`);
  if (e.errors.length) console.log(`while loading: ${e.errors.join('\n  ')}`);
}

function bars(r: Results): BarVerdict[] {
  const e = r.engine;
  const n = flags.names.toLocaleString('en-US');
  const startS = e.servingMs.median / 1000;
  const rss = e.rssMb.median;
  const idle = e.steadyIdleCpuMsPerMinute.median;
  const base = r.baseline.steadyIdleCpuMsPerMinute.median;
  const anyS = Math.max(e.firstServedMs.median, e.lastServedMs.median) / 1000;
  const allReadS = e.startResolvedMs.median / 1000;
  return [
    {
      what: `${n} managed names: any name served after start() (the first and the last name, asked at once)`,
      bar: `≤ ${BAR_ANY_NAME_S} s`,
      measured: `${anyS.toFixed(2)} s (each of ${flags.sample} sampled names asked at start: median ${(e.sampleP50Ms.median / 1000).toFixed(2)} s, all ${(e.sampleServedMs.median / 1000).toFixed(2)} s)`,
      met: anyS <= BAR_ANY_NAME_S,
    },
    {
      what: `${n} managed names${onPostgres ? ' in PostgreSQL' : ''}: every name read${useIndex ? ' (warm start: from the start-up index)' : ''}`,
      bar: `≤ ${BAR_ALL_READ_S} s`,
      measured: `${allReadS.toFixed(1)} s (${r.ratios.startResolved.median.toFixed(2)} × ${baselineLabel} in the same run)`,
      met: allReadS <= BAR_ALL_READ_S,
    },
    {
      what: `${n} managed names: start-up reads, ${storageLabel} (issue 14)${useIndex ? ', warm start' : ''}`,
      bar: `≤ ${BAR_STARTUP_RATIO} × ${baselineLabel}`,
      measured: `${r.ratios.startResolved.median.toFixed(2)} × wall (${spread(r.ratios.startResolved)}), ${r.ratios.startCpu.median.toFixed(2)} × CPU (${spread(r.ratios.startCpu)})`,
      met: r.ratios.startResolved.median <= BAR_STARTUP_RATIO,
    },
    ...(r.cold
      ? [
          {
            what: `${n} managed names: start-up reads, ${storageLabel}, cold start (no index yet)`,
            bar: `≤ ${BAR_STARTUP_RATIO} × ${baselineLabel}`,
            measured: `${r.cold.startResolvedRatio.median.toFixed(2)} × wall (${spread(r.cold.startResolvedRatio)}), ${r.cold.startCpuRatio.median.toFixed(2)} × CPU (${spread(r.cold.startCpuRatio)})`,
            met: r.cold.startResolvedRatio.median <= BAR_STARTUP_RATIO,
          },
        ]
      : []),
    {
      what: `${n} managed names: memory (the million-name bar)`,
      bar: `≤ ${BAR_RSS_MILLION_MB} MB RSS`,
      measured: `${rss.toFixed(0)} MB RSS`,
      met: rss <= BAR_RSS_MILLION_MB,
    },
    {
      what: `${n} managed names: status paged`,
      bar: 'no call but status() builds an object per name',
      measured: `first page ${e.statusFirstPageMs.median.toFixed(2)} ms, last page ${e.statusLastPageMs.median.toFixed(1)} ms, summary ${e.statusSummaryMs.median.toFixed(1)} ms, status() ${e.statusMs.median.toFixed(0)} ms`,
      met: true,
    },
    {
      what: `${n} managed names: serving (first, last and ${flags.sample} sampled names served)`,
      bar: `≤ ${BAR_START_S} s`,
      measured: `${startS.toFixed(1)} s (every name read: ${(e.startResolvedMs.median / 1000).toFixed(1)} s, ${r.ratios.startResolved.median.toFixed(1)} × ${baselineLabel})${e.notServing.max > 0 ? `; ${e.notServing.max} names NOT serving (${shortReason(e.errors)})` : ''}`,
      met: startS <= BAR_START_S && e.notServing.max === 0,
      ...(startS <= BAR_START_S && e.notServing.max === 0
        ? {}
        : { note: [startS > BAR_START_S ? `${(startS - BAR_START_S).toFixed(1)} s over` : '', e.notServing.max > 0 ? `${e.notServing.max} names failed to load` : ''].filter(Boolean).join('; ') }),
    },
    {
      what: `${n} managed names: memory`,
      bar: `≤ ${BAR_RSS_MB} MB RSS`,
      measured: `${rss.toFixed(0)} MB RSS (${fmt(e.heapPerNameBytes.median, 4)} B heap per name)`,
      met: rss <= BAR_RSS_MB,
      ...(rss <= BAR_RSS_MB ? {} : { note: `${(rss - BAR_RSS_MB).toFixed(0)} MB over` }),
    },
    {
      what: `idle engine with ${n} names`,
      bar: `~0 CPU (timers, not scans): < ${BAR_IDLE_MS_PER_MINUTE} ms a minute`,
      measured: `${idle.toFixed(1)} ms CPU per minute, steady (baseline process ${base.toFixed(1)}; whole period incl. post-load GC ${e.idleCpuMsPerMinute.median.toFixed(0)})`,
      // "~0": under 0.1 % of one core (60 ms of CPU a minute) once V8's post-load GCs are over.
      met: idle <= BAR_IDLE_MS_PER_MINUTE,
    },
  ];
}

await main();

/** The gist of the first load error, for the one-line bar verdict (the full text is in the JSON). */
function shortReason(errors: string[]): string {
  const first = errors.find((e) => !e.includes('asked again')) ?? errors[0] ?? 'unknown';
  return /E[A-Z]{3,}: [^,']*/.exec(first)?.[0] ?? first.slice(0, 100);
}

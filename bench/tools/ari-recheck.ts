/**
 * The engine's cost per ARI recheck of a sleeping name: N names from file
 * storage, all asleep (`maxLiveActors: 0` unless `--live`), an issuer that
 * answers renewal information in process (a window at 60–66 % of the
 * certificate's lifetime, as bench:scale's), and a simulated clock moved
 * forward so that the wake heap fires the rechecks back to back. Reported per
 * recheck: CPU (user + system, all threads), the main thread's GC pauses
 * (`v8.GCProfiler`), bytes allocated (heap growth plus what each GC freed),
 * and names woken into an actor. Two phases: each name's first recheck after
 * start (its certificate read from storage), then a whole recheck interval
 * later (its second, the steady state).
 *
 * Each engine runs in a fresh process; with `--ab <engine.ts>` the runs
 * alternate between this tree's engine and that one (e.g. a copy of main's
 * src, see bench/lib/engine-module.ts), and the ratio is of the pairs.
 *
 *   node --import tsx bench/tools/ari-recheck.ts [--names 100000] [--rechecks 20000] [--runs 3] [--ab .scratch/main/src/engine/engine.ts]
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { GCProfiler } from 'node:v8';
import { fileURLToPath } from 'node:url';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { ManualClock } from '../../src/clock.js';
import { ARI_DEFAULT_RECHECK_MS } from '../../src/engine/ari.js';
import { parseFlags } from '../lib/args.js';
import { ensureDataset, fileStorageDir } from '../lib/dataset.js';
import { ariBenchIssuer, engineModule } from '../lib/engine-module.js';
import { RESULTS_DIR } from '../lib/paths.js';
import { gc } from '../lib/memory.js';
import { pairedRatios, summarize } from '../lib/stats.js';

const flags = parseFlags('bench/tools/ari-recheck.ts', {
  names: { default: 100_000, help: 'names held (all asleep unless --live)' },
  rechecks: { default: 20_000, help: 'rechecks measured per phase' },
  live: { default: 0, help: 'maxLiveActors' },
  runs: { default: 3, help: 'processes per engine (alternated with --ab)' },
  ab: { default: '', help: 'another engine module to compare (path from the repository root), run alternately' },
  profile: { default: false, help: 'write a CPU profile of the measured phases of each process to bench/results/profiles/' },
  'heap-profile': { default: false, help: 'print where the measured phases allocate (V8 sampling heap profiler, bytes by function)' },
  child: { default: false, help: '(internal) measure one engine and print JSON' },
});

interface Phase {
  rechecks: number;
  cpuUsPerRecheck: number;
  gcUsPerRecheck: number;
  gcs: number;
  bytesPerRecheck: number;
  woken: number;
}
interface ChildResult {
  first: Phase;
  steady: Phase;
  heapMb: number;
}

async function child(): Promise<ChildResult> {
  const count = flags.names;
  const dataset = await ensureDataset(count);
  const { dir, dispose } = await fileStorageDir(dataset, dataset.names.slice(0, count));
  try {
    let asked = 0;
    const issuer = ariBenchIssuer('ari-recheck', () => asked++);
    const clock = new ManualClock(Date.now());
    const { createCertEngine } = await engineModule();
    const engine = createCertEngine({
      storage: fileStorage(dir),
      issuers: [issuer],
      names: dataset.names.slice(0, count),
      clock,
      maxLiveActors: flags.live,
      startupIndex: false,
      storageCleaner: false,
      sessionTickets: false,
    });
    await engine.start();
    const startedAt = clock.now();
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    // Rechecks are spread uniformly over the interval: this much simulated time holds ~64 of them.
    const stepMs = Math.max(1, Math.floor((64 / count) * ARI_DEFAULT_RECHECK_MS));
    /** Move the clock on until `rechecks` more requests were answered; measure what that cost. */
    const phase = async (rechecks: number): Promise<Phase> => {
      gc();
      const live0 = engine.stats.liveActors;
      const asked0 = asked;
      const heap0 = process.memoryUsage().heapUsed;
      const profiler = new GCProfiler();
      profiler.start();
      const cpu0 = process.cpuUsage();
      let woken = 0;
      while (asked - asked0 < rechecks) {
        clock.advance(stepMs);
        await turn();
        woken = Math.max(woken, engine.stats.liveActors - live0);
      }
      const cpu = process.cpuUsage(cpu0);
      const heap1 = process.memoryUsage().heapUsed;
      const stats = profiler.stop()?.statistics ?? [];
      const done = asked - asked0;
      const freed = stats.reduce((sum, s) => sum + Math.max(0, s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize), 0);
      return {
        rechecks: done,
        cpuUsPerRecheck: (cpu.user + cpu.system) / done,
        gcUsPerRecheck: stats.reduce((sum, s) => sum + s.cost, 0) / done,
        gcs: stats.length,
        bytesPerRecheck: (heap1 - heap0 + freed) / done,
        woken,
      };
    };
    const session = flags.profile ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    const heapSession = flags['heap-profile'] ? new Session() : undefined;
    if (heapSession) {
      heapSession.connect();
      await heapSession.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    }
    const first = await phase(flags.rechecks);
    // The rest of the names' first rechecks, unmeasured, to the start of the next interval: from there on
    // every name rechecked is on its second (those of the first phase first).
    while (clock.now() < startedAt + ARI_DEFAULT_RECHECK_MS) {
      clock.advanceTo(Math.min(startedAt + ARI_DEFAULT_RECHECK_MS, clock.now() + 16 * stepMs));
      await turn();
    }
    const steady = await phase(flags.rechecks);
    if (heapSession) {
      const { profile } = await heapSession.post('HeapProfiler.stopSampling');
      printAllocations(profile, 2 * flags.rechecks);
      heapSession.disconnect();
    }
    if (session) {
      const { profile } = await session.post('Profiler.stop');
      const dir = path.join(RESULTS_DIR, 'profiles');
      mkdirSync(dir, { recursive: true });
      const which = path.basename(path.dirname(path.dirname(path.dirname(process.env.CERTSTATE_BENCH_ENGINE ?? 'this/src/engine/x')))) || 'this';
      const file = path.join(dir, `ari-recheck-${which}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      console.error(`profile: ${file}`);
      session.disconnect();
    }
    gc();
    const heapMb = process.memoryUsage().heapUsed / 2 ** 20;
    await engine.stop();
    return { first, steady, heapMb };
  } finally {
    await dispose();
  }
}

interface SamplingNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SamplingNode[];
}

/** Bytes allocated per recheck by function (self), from a sampling heap profile, to stderr. */
function printAllocations(profile: { head: SamplingNode }, rechecks: number): void {
  const bySite = new Map<string, number>();
  const walk = (node: SamplingNode, caller: string) => {
    const { functionName, url, lineNumber } = node.callFrame;
    const here = `${functionName || '(anonymous)'} ${url.replace(/^.*\/(src|bench|node_modules)\//, '$1/')}:${lineNumber + 1}`;
    const site = `${here}  ← ${caller}`;
    if (node.selfSize > 0) bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child, here);
  };
  walk(profile.head, '');
  const total = [...bySite.values()].reduce((a, b) => a + b, 0);
  console.error(`allocation sampled: ${(total / rechecks).toFixed(0)} B a recheck; by function (← caller):`);
  for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.error(`  ${(bytes / rechecks).toFixed(0).padStart(6)} B  ${site}`);
}

function runChild(engine: string): Promise<ChildResult> {
  const env = { ...process.env };
  if (engine) env.CERTSTATE_BENCH_ENGINE = engine;
  else delete env.CERTSTATE_BENCH_ENGINE;
  const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--names', String(flags.names), '--rechecks', String(flags.rechecks), '--live', String(flags.live), `--profile=${flags.profile}`, `--heap-profile=${flags['heap-profile']}`];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { env, maxBuffer: 1 << 20, timeout: 30 * 60_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`${error.message}\n${stderr}`));
      if (stderr.trim()) console.error(stderr.trim());
      resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as ChildResult);
    });
  });
}

if (flags.child) {
  const result = await child();
  console.log(JSON.stringify(result));
  process.exit(0);
} else {
  const engines = flags.ab ? ['', flags.ab] : [''];
  const results = new Map<string, ChildResult[]>(engines.map((e) => [e, []]));
  for (let run = 0; run < flags.runs; run++) {
    // Alternate which engine goes first, so neither always runs on a warmer machine.
    for (const engine of run % 2 ? [...engines].reverse() : engines) {
      const r = await runChild(engine);
      results.get(engine)!.push(r);
      console.error(`run ${run + 1} ${engine || 'this tree'}: first ${r.first.cpuUsPerRecheck.toFixed(1)} µs, steady ${r.steady.cpuUsPerRecheck.toFixed(1)} µs a recheck`);
    }
  }
  const line = (label: string, rs: ChildResult[], which: 'first' | 'steady') => {
    const m = (f: (p: Phase) => number) => summarize(rs.map((r) => f(r[which]))).median;
    return `${label.padEnd(28)} ${which.padEnd(6)} CPU ${m((p) => p.cpuUsPerRecheck).toFixed(1).padStart(7)} µs  GC ${m((p) => p.gcUsPerRecheck).toFixed(1).padStart(6)} µs (${m((p) => p.gcs)} GCs)  ${m((p) => p.bytesPerRecheck).toFixed(0).padStart(6)} B allocated  woken ${m((p) => p.woken)}`;
  };
  console.log(`${flags.names} names (${flags.live} live), ${flags.rechecks} rechecks a phase, median of ${flags.runs} processes each`);
  for (const engine of engines) for (const which of ['first', 'steady'] as const) console.log(line(engine || 'this tree', results.get(engine)!, which));
  if (flags.ab) {
    for (const which of ['first', 'steady'] as const) {
      const r = pairedRatios(results.get('')!.map((x) => x[which].cpuUsPerRecheck), results.get(flags.ab)!.map((x) => x[which].cpuUsPerRecheck));
      console.log(`CPU a recheck, ${which}: this tree / ${flags.ab} = ${r.median.toFixed(3)} (pairs ${r.values.map((v) => v.toFixed(3)).join(', ')})`);
    }
  }
}

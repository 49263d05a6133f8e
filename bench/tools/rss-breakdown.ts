/**
 * Where a started engine's resident memory is, beyond the JS heap: an engine
 * holding N names from file storage (defaults as in bench:scale, or every
 * name asleep with `--live 0`), then after a full GC the V8 heap spaces
 * (used and committed), external memory, and RSS;
 * again after 10 s of idle (V8's memory reducer has run by then), and with
 * `--compact` after a full GC that compacts every page: the difference
 * between "committed" and "used" old space is fragmentation.
 *
 * `--warm`: the engine starts from the start-up index (a restarted
 * server), written first by a cold start in another process; else it
 * starts cold (no index: every certificate through the bulk read). The
 * files are copies (bench/lib/dataset.ts `fileStorageDir`), so the check
 * after start-up re-reads none unless `--stale` changes every file's version
 * after the index is written (a restore from backup: the check re-reads
 * all). With an index, readings are also taken once the check is done and
 * the index written again. The peak RSS of each phase is sampled every 50 ms (no GC).
 *
 *   node --import tsx bench/tools/rss-breakdown.ts [--names 100000] [--live 1000] [--warm] [--stale] [--compact]
 */
import { execFileSync } from 'node:child_process';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { parseFlags } from '../lib/args.js';
import { ensureDataset, fileStorageDir, touchVersions } from '../lib/dataset.js';
import { engineModule, fileStorageModule, refusingIssuer } from '../lib/engine-module.js';
import { gc } from '../lib/memory.js';

const flags = parseFlags('bench/tools/rss-breakdown.ts', {
  names: { default: 100_000, help: 'names the engine holds' },
  live: { default: 1000, help: 'maxLiveActors' },
  cache: { default: 10_000, help: 'cacheCapacity' },
  compact: { default: false, help: 'after the idle reading, one more full GC with V8 compacting every page (--compact-on-every-full-gc): what the heap would hold without fragmentation' },
  warm: { default: false, help: 'start from the start-up index, written first by a cold start in another process' },
  stale: { default: false, help: "with --warm: change every file's version after the index is written, so the check after start-up re-reads every file" },
  prepare: { default: '', help: '(internal) write the start-up index of this directory with a cold start, then exit' },
});

const MB = 2 ** 20;
const reading = (label: string) => {
  gc();
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  const spaces = getHeapSpaceStatistics()
    .filter((s) => s.space_size > 4 * MB)
    .map((s) => `${s.space_name} ${(s.space_used_size / MB).toFixed(0)}/${(s.space_size / MB).toFixed(0)}`)
    .join(', ');
  console.log(
    `${label}: rss ${(m.rss / MB).toFixed(0)} MB, heap used ${(m.heapUsed / MB).toFixed(0)} / total ${(m.heapTotal / MB).toFixed(0)} / physical ${(h.total_physical_size / MB).toFixed(0)} MB, external ${(m.external / MB).toFixed(0)} MB (array buffers ${(m.arrayBuffers / MB).toFixed(0)}), malloced ${(h.malloced_memory / MB).toFixed(0)} MB (peak ${(h.peak_malloced_memory / MB).toFixed(0)}); spaces used/size MB: ${spaces}`,
  );
};

const indexFile = (dir: string) => path.join(dir, '~index', 'startup');
const indexTime = (dir: string) => stat(indexFile(dir)).then((s) => s.mtimeMs, () => 0);
/** Resolves once the index file is written after `since` (its mtime). */
const indexWritten = async (dir: string, since: number) => {
  while ((await indexTime(dir)) <= since) await new Promise((r) => setTimeout(r, 50));
};

/** Highest RSS sampled every 50 ms (no GC) until `stop()`, MB. */
function peakRss() {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 50);
  return { stop: () => (clearInterval(timer), Math.max(peak, process.memoryUsage.rss()) / MB) };
}

const dataset = await ensureDataset(flags.names, () => {});
const names = dataset.names.slice(0, flags.names);
const { createCertEngine } = await engineModule();
const { fileStorage } = await fileStorageModule();
const newEngine = (dir: string) => createCertEngine({ storage: fileStorage(dir), issuers: [refusingIssuer('rss-breakdown')], names, maxLiveActors: flags.live, cacheCapacity: flags.cache });

if (flags.prepare) {
  const engine = newEngine(flags.prepare);
  await engine.start();
  await indexWritten(flags.prepare, 0);
  await engine.stop();
  process.exit(0);
}

const dir = await fileStorageDir(dataset, names, { copies: true });
if (flags.warm) {
  const script = fileURLToPath(import.meta.url);
  execFileSync(process.execPath, ['--import', 'tsx', script, '--names', String(flags.names), '--live', String(flags.live), '--cache', String(flags.cache), '--prepare', dir.dir], { stdio: 'inherit' });
  if (flags.stale) await touchVersions(dir.dir, names);
  console.log(`start-up index written by a cold start in another process${flags.stale ? "; every file's version changed since (the check re-reads them all)" : ''}`);
}
reading('before');
const engine = newEngine(dir.dir);
const written = await indexTime(dir.dir);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let peak = peakRss();
await engine.start();
const cpu = process.cpuUsage(cpu0);
console.log(`start() (${flags.warm ? 'warm: from the index' : 'cold: no index'}): ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU, peak RSS ${peak.stop().toFixed(0)} MB; ${JSON.stringify(engine.stats)}`);
reading('started');
peak = peakRss();
const t1 = performance.now();
await indexWritten(dir.dir, written);
console.log(`the check after start-up done and the index written: ${((performance.now() - t1) / 1000).toFixed(1)} s after the reading above, peak RSS meanwhile ${peak.stop().toFixed(0)} MB`);
reading('index written');
await new Promise((r) => setTimeout(r, 10_000));
reading('after 10 s idle');
if (flags.compact) {
  setFlagsFromString('--compact-on-every-full-gc');
  reading('after a compacting full GC');
}
await engine.stop();
await dir.dispose();

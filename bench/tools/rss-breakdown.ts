/**
 * Where a started engine's resident memory is, beyond the JS heap: an engine
 * holding N names from file storage (defaults as in bench:scale, or every
 * name asleep with `--live 0`), then after a full GC the V8 heap spaces
 * (used and committed), external memory, and RSS;
 * again after 10 s of idle (V8's memory reducer has run by then), and with
 * `--compact` after a full GC that compacts every page: the difference
 * between "committed" and "used" old space is fragmentation.
 *
 *   node --import tsx bench/tools/rss-breakdown.ts [--names 100000] [--live 1000]
 */
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { parseFlags } from '../lib/args.js';
import { ensureDataset, fileStorageDir } from '../lib/dataset.js';
import { engineModule, refusingIssuer } from '../lib/engine-module.js';
import { gc } from '../lib/memory.js';

const flags = parseFlags('bench/tools/rss-breakdown.ts', {
  names: { default: 100_000, help: 'names the engine holds' },
  live: { default: 1000, help: 'maxLiveActors' },
  cache: { default: 10_000, help: 'cacheCapacity' },
  compact: { default: false, help: 'after the idle reading, one more full GC with V8 compacting every page (--compact-on-every-full-gc): what the heap would hold without fragmentation' },
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

const dataset = await ensureDataset(flags.names, () => {});
const names = dataset.names.slice(0, flags.names);
const dir = await fileStorageDir(dataset, names);
reading('before');
const { createCertEngine } = await engineModule();
const engine = createCertEngine({ storage: fileStorage(dir.dir), issuers: [refusingIssuer('rss-breakdown')], names, maxLiveActors: flags.live, cacheCapacity: flags.cache });
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await engine.start();
const cpu = process.cpuUsage(cpu0);
console.log(`start(): ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU; ${JSON.stringify(engine.stats)}`);
reading('started');
await new Promise((r) => setTimeout(r, 10_000));
reading('after 10 s idle');
if (flags.compact) {
  setFlagsFromString('--compact-on-every-full-gc');
  reading('after a compacting full GC');
}
await engine.stop();
await dir.dispose();

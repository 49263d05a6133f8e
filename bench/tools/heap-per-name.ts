/**
 * Bytes of heap per sleeping name, and what they are: an engine holding N
 * and then 2N names from file storage (every name asleep: `maxLiveActors: 0`,
 * one certificate's key material cached), each in its own process; a V8 heap
 * snapshot of each, self sizes summed by kind of object; the difference
 * divided by N is what one more name costs, by kind (fixed costs cancel out).
 *
 *   node --import tsx bench/tools/heap-per-name.ts [--names 20000]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { writeHeapSnapshot } from 'node:v8';
import os from 'node:os';
import path from 'node:path';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { parseFlags } from '../lib/args.js';
import { ensureDataset, fileStorageDir } from '../lib/dataset.js';
import { engineModule, refusingIssuer } from '../lib/engine-module.js';
import { gc } from '../lib/memory.js';

const flags = parseFlags('bench/tools/heap-per-name.ts', {
  names: { default: 20_000, help: 'N: the engines hold N and 2N names' },
  child: { default: 0, help: '(internal) hold this many names and write a snapshot summary to stdout' },
});

type Totals = Record<string, { bytes: number; count: number }>;

/** Self size by kind: strings as one kind, objects and arrays by V8's name for them. */
function summarizeSnapshot(file: string): Totals {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const stride = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const totals: Totals = {};
  for (let i = 0; i < snap.nodes.length; i += stride) {
    const type = types[snap.nodes[i + iType]!]!;
    const name = snap.strings[snap.nodes[i + iName]!]!;
    const kind = type.includes('string') ? `string (${type})` : type === 'object' || type === 'array' || type === 'hidden' || type === 'native' ? `${type}: ${name.slice(0, 40)}` : type;
    const t = (totals[kind] ??= { bytes: 0, count: 0 });
    t.bytes += snap.nodes[i + iSize]!;
    t.count++;
  }
  return totals;
}

async function child(count: number): Promise<void> {
  const dataset = await ensureDataset(count, () => {});
  const names = dataset.names.slice(0, count);
  const dir = await fileStorageDir(dataset, names);
  const { createCertEngine } = await engineModule();
  const engine = createCertEngine({ storage: fileStorage(dir.dir), issuers: [refusingIssuer('heap-per-name')], names, maxLiveActors: 0, cacheCapacity: 1 });
  await engine.start();
  gc();
  const file = path.join(os.tmpdir(), `certstate-heap-${process.pid}.heapsnapshot`);
  writeHeapSnapshot(file);
  const stats = engine.stats;
  await engine.stop();
  await dir.dispose();
  const totals = summarizeSnapshot(file);
  rmSync(file, { force: true });
  process.stdout.write(JSON.stringify({ stats, totals }));
}

function run(count: number): { stats: Record<string, number>; totals: Totals } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--max-old-space-size=8192', new URL(import.meta.url).pathname, '--child', String(count)], {
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`child with ${count} names failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { stats: Record<string, number>; totals: Totals };
}

if (flags.child > 0) {
  await child(flags.child);
} else {
  const n = flags.names;
  await ensureDataset(2 * n);
  const a = run(n);
  const b = run(2 * n);
  console.log(`engine.stats at ${n}: ${JSON.stringify(a.stats)}; at ${2 * n}: ${JSON.stringify(b.stats)}`);
  const kinds = new Set([...Object.keys(a.totals), ...Object.keys(b.totals)]);
  const rows = [...kinds]
    .map((k) => ({ k, bytes: ((b.totals[k]?.bytes ?? 0) - (a.totals[k]?.bytes ?? 0)) / n, count: ((b.totals[k]?.count ?? 0) - (a.totals[k]?.count ?? 0)) / n }))
    .filter((r) => Math.abs(r.bytes) >= 2)
    .sort((x, y) => y.bytes - x.bytes);
  const total = rows.reduce((s, r) => s + r.bytes, 0);
  console.log(`\n| kind (V8 heap snapshot) | bytes per name | objects per name |\n|---|---|---|`);
  for (const r of rows) console.log(`| ${r.k} | ${r.bytes.toFixed(0)} | ${r.count.toFixed(2)} |`);
  console.log(`| **total** | **${total.toFixed(0)}** | |`);
}

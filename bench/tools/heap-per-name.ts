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

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/**
 * Self size by kind. Objects are told apart by their shape (their first
 * property names: a name's record, the certificate metadata, a Map's
 * table…), everything else (strings, numbers, arrays, backing stores) by
 * what holds it: the property or kind of edge it is first reached through
 * and its holder's shape — so the table says "the fingerprint string of the
 * metadata", not "a string".
 */
function summarizeSnapshot(file: string): Totals {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const { node_fields: fields, node_types: [types], edge_fields: efields, edge_types: [etypes] } = snap.snapshot.meta;
  const stride = fields.length;
  const estride = efields.length;
  const [iType, iName, iSize, iEdges] = ['type', 'name', 'self_size', 'edge_count'].map((f) => fields.indexOf(f)) as [number, number, number, number];
  const [eType, eName, eTo] = ['type', 'name_or_index', 'to_node'].map((f) => efields.indexOf(f)) as [number, number, number];
  const count = snap.nodes.length / stride;
  const typeOf = (n: number) => types[snap.nodes[n * stride + iType]!]!;
  const nameOf = (n: number) => snap.strings[snap.nodes[n * stride + iName]!]!;
  // Each object's shape: its named properties (not element indices), in order, the first 6.
  const shape = new Array<string | undefined>(count);
  const holder = new Int32Array(count).fill(-1);
  const via = new Array<string | undefined>(count);
  let e = 0;
  for (let n = 0; n < count; n++) {
    const edges = snap.nodes[n * stride + iEdges]!;
    const props: string[] = [];
    for (let k = 0; k < edges; k++, e += estride) {
      const et = etypes[snap.edges[e + eType]!]!;
      const to = snap.edges[e + eTo]! / stride;
      const label = et === 'element' || et === 'hidden' ? `[${et}]` : String(snap.strings[snap.edges[e + eName]!] ?? snap.edges[e + eName]);
      if (et === 'property' && props.length < 6) props.push(label);
      if (et === 'weak' || et === 'shortcut') continue;
      if (holder[to] === -1) {
        holder[to] = n;
        via[to] = label;
      }
    }
    if (typeOf(n) === 'object') shape[n] = `${nameOf(n)} {${props.join(',')}}`;
  }
  const kindOf = (n: number): string => {
    const type = typeOf(n);
    if (type === 'object') return `object ${shape[n]}`;
    const h = holder[n]!;
    const held = h < 0 ? 'root' : typeOf(h) === 'object' ? (shape[h] ?? nameOf(h)) : `${typeOf(h)} ${nameOf(h).slice(0, 30)}`;
    const what = type.includes('string') ? `string (${type})` : type === 'array' || type === 'hidden' || type === 'native' ? `${type} ${nameOf(n).slice(0, 30)}` : type;
    return `${what} ← .${via[n]} of ${held.slice(0, 80)}`;
  };
  const totals: Totals = {};
  for (let n = 0; n < count; n++) {
    const t = (totals[kindOf(n)] ??= { bytes: 0, count: 0 });
    t.bytes += snap.nodes[n * stride + iSize]!;
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

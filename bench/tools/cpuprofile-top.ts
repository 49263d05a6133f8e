/**
 * Summarise a V8 `.cpuprofile` (from `node --cpu-prof`): self time by
 * function and by source file, and total (inclusive) time of the functions
 * whose file matches `--focus` (default `/src/`). This is how the numbers in
 * BENCHMARKS.md's analysis were read out of the profiles.
 *
 *   node --import tsx bench/tools/cpuprofile-top.ts <file.cpuprofile> [--top 25] [--focus /src/] [--skip-seconds 0]
 */
import { readFileSync } from 'node:fs';
import { parseFlags } from '../lib/args.js';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file || file.startsWith('--')) {
  console.error('usage: cpuprofile-top.ts <file.cpuprofile> [--top 25] [--focus /src/]');
  process.exit(2);
}
const flags = parseFlags('bench/tools/cpuprofile-top.ts', {
  top: { default: 25, help: 'rows per table' },
  focus: { default: '/src/', help: 'substring of the URLs whose inclusive time is listed' },
  'skip-seconds': { default: 0, help: 'leave out the samples of the first N seconds (set-up, warm-up)' },
}, process.argv.slice(3));

const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Time per sample: the delta to the next sample.
const selfUs = new Map<number, number>();
let elapsedUs = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  elapsedUs += profile.timeDeltas[i] ?? 0;
  if (elapsedUs < flags['skip-seconds'] * 1e6) continue;
  selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + dt);
}
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url: string) => url.replace(/^file:\/\/.*?\/(src|bench|test|node_modules)\//, '$1/').replace(/^node:/, 'node:');
const label = (n: Node) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`;

function table(title: string, rows: Array<[string, number]>): void {
  console.log(`\n${title}`);
  for (const [name, us] of rows.sort((a, b) => b[1] - a[1]).slice(0, flags.top)) {
    console.log(`${(us / 1000).toFixed(1).padStart(9)} ms ${((us / totalUs) * 100).toFixed(1).padStart(5)} %  ${name}`);
  }
}

const selfByFn = new Map<string, number>();
const selfByFile = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  selfByFn.set(label(n), (selfByFn.get(label(n)) ?? 0) + us);
  const f = shortUrl(n.callFrame.url) || `(${n.callFrame.functionName || 'native'})`;
  selfByFile.set(f, (selfByFile.get(f) ?? 0) + us);
}

// Inclusive time: each sample counts once for every distinct function on its stack.
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!;
    if (!n.callFrame.url.includes(flags.focus)) continue;
    const key = label(n);
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + us);
  }
}

console.log(`profile ${file}: ${(totalUs / 1000).toFixed(0)} ms sampled`);
table('self time by function', [...selfByFn]);
table('self time by file', [...selfByFile]);
table(`inclusive time, functions in ${flags.focus}`, [...inclusive]);

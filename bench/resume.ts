/**
 * bench:resume — server CPU per resumed TLS handshake against a full one,
 * measured in the same run (DESIGN.md §6: resumed ≤ 0.25 × full; a session
 * from one process resumes on another).
 *
 *   certstate full     a certstate server process (file storage shared with a
 *                      second certstate process); clients offer no session
 *   certstate resumed  the same server; every client resumes a session the
 *                      *other* certstate process issued (cluster resumption)
 *   node full/resumed  plain `tls.createServer`, one certificate, Node's own
 *                      `ticketKeys`: what resumption saves Node itself, the
 *                      floor any Node server's ratio sits on
 *
 * Servers are child processes measuring their own CPU (`process.cpuUsage`);
 * load clients are worker threads of this process. TLS 1.3 (Node's default),
 * RSA-2048 leaves from the bench dataset. The four measurements of a round
 * run in a rotating order, and each ratio pairs runs of the same round.
 *
 *   node --import tsx bench/resume.ts [--names 100] [--seconds 3] [--runs 5]
 */
import tls from 'node:tls';
import { forkTs, runWorker, type RpcChild } from './lib/children.js';
import { parseFlags } from './lib/args.js';
import { ensureDataset, fileStorageDir } from './lib/dataset.js';
import { printBars, printTable, spread, writeResult, type BarVerdict } from './lib/report.js';
import { pairedRatios, summarize } from './lib/stats.js';
import type { ClientJob, ClientReport } from './handshake/client.js';
import type { ResumeEnd, ResumeServerMode } from './resume/server.js';

const flags = parseFlags('bench/resume.ts', {
  names: { default: 100, help: 'names the certstate servers manage (full handshakes pick a random one)' },
  seconds: { default: 3, help: 'length of one measured run' },
  runs: { default: 5, help: 'measured rounds (each runs all four measurements)' },
  clients: { default: 2, help: 'load client worker threads' },
  concurrency: { default: 8, help: 'handshakes in flight per client thread' },
  'warmup-seconds': { default: 1, help: 'unmeasured load per measurement before the runs' },
  json: { default: '', help: 'write the JSON result here instead of bench/results/resume.json' },
});

const BAR = 0.25;
const KINDS = ['certstate full', 'certstate resumed', 'node full', 'node resumed'] as const;
type Kind = (typeof KINDS)[number];

interface Run {
  round: number;
  kind: Kind;
  cpuPerHandshakeUs: number;
  handshakes: number;
  resumed: number;
  handshakesPerSecond: number;
  errors: number;
}

/** One full handshake with `port`: the session the server issued (TLS 1.3 sends it after the handshake). */
function sessionFrom(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    socket.on('session', (s: Buffer) => (session = s));
    socket.on('data', () => {});
    socket.once('error', reject);
    socket.once('close', () => (session ? resolve(session.toString('base64')) : reject(new Error(`no session from port ${port}`))));
  });
}

async function load(port: number, names: string[], seconds: number, seed: number, session?: string): Promise<ClientReport[]> {
  return Promise.all(
    Array.from({ length: flags.clients }, (_, i) => {
      const job: ClientJob = { port, names, seconds, concurrency: flags.concurrency, seed: seed * 101 + i, alpn: true, ...(session ? { session } : {}) };
      return runWorker<ClientReport>(new URL('./handshake/client.ts', import.meta.url), job, (seconds + 30) * 1000);
    }),
  );
}

interface Target {
  child: RpcChild;
  port: number;
  session?: string;
}

async function measure(target: Target, names: string[], round: number, kind: Kind): Promise<Run> {
  await target.child.call('begin');
  const reports = await load(target.port, names, flags.seconds, round + 1, target.session);
  const end = await target.child.call<ResumeEnd>('end');
  if (end.handshakes === 0) throw new Error(`${kind}: no handshake completed (${reports.find((r) => r.firstError)?.firstError ?? 'no error reported'})`);
  const wantResumed = kind.endsWith('resumed');
  // A resumption that quietly fell back to full handshakes would make the ratio meaningless.
  if (wantResumed ? end.resumed !== end.handshakes : end.resumed !== 0) {
    throw new Error(`${kind}: ${end.resumed} of ${end.handshakes} handshakes resumed (expected ${wantResumed ? 'all' : 'none'})`);
  }
  const activeMs = Math.max(...reports.map((r) => r.activeMs));
  return {
    round,
    kind,
    cpuPerHandshakeUs: end.cpuUs / end.handshakes,
    handshakes: end.handshakes,
    resumed: end.resumed,
    handshakesPerSecond: (reports.reduce((n, r) => n + r.handshakes, 0) / activeMs) * 1000,
    errors: reports.reduce((n, r) => n + r.errors, 0) + end.clientErrors,
  };
}

const cpuOf = (runs: Run[], kind: Kind) => runs.filter((r) => r.kind === kind).sort((a, b) => a.round - b.round).map((r) => r.cpuPerHandshakeUs);

function ratios(runs: Run[]) {
  return {
    certstateResumedVsFull: pairedRatios(cpuOf(runs, 'certstate resumed'), cpuOf(runs, 'certstate full')),
    nodeResumedVsFull: pairedRatios(cpuOf(runs, 'node resumed'), cpuOf(runs, 'node full')),
    certstateVsNodeResumed: pairedRatios(cpuOf(runs, 'certstate resumed'), cpuOf(runs, 'node resumed')),
    certstateVsNodeFull: pairedRatios(cpuOf(runs, 'certstate full'), cpuOf(runs, 'node full')),
  };
}

function bars(runs: Run[]): BarVerdict[] {
  const r = ratios(runs);
  const met = r.certstateResumedVsFull.median <= BAR;
  return [
    {
      what: 'server CPU per resumed TLS handshake (session from another process of the cluster) vs a full one',
      bar: `≤ ${BAR} × full`,
      measured: `${r.certstateResumedVsFull.median.toFixed(3)} × full (runs ${r.certstateResumedVsFull.min.toFixed(3)}–${r.certstateResumedVsFull.max.toFixed(3)}); plain Node with its own ticket key: ${r.nodeResumedVsFull.median.toFixed(3)} × full`,
      met,
      ...(met ? {} : { note: `Node's own resumption is ${r.nodeResumedVsFull.median.toFixed(2)} × a full handshake in this run: the per-connection cost of a Node TLS socket is the floor` }),
    },
  ];
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const dataset = await ensureDataset(flags.names);
  const names = dataset.names;
  const storage = await fileStorageDir(dataset);
  const children: RpcChild[] = [];
  const start = async (mode: ResumeServerMode): Promise<Target> => {
    const child = forkTs(new URL('./resume/server.ts', import.meta.url));
    children.push(child);
    const { port } = await child.call<{ port: number }>('setup', { mode, names: flags.names, storageDir: storage.dir }, 10 * 60_000);
    return { child, port };
  };
  try {
    console.error(`resume: starting two certstate servers on one file storage (${flags.names} names) and a plain Node server…`);
    const [issuing, certstate, node] = await Promise.all([start('certstate'), start('certstate'), start('node')]);
    const certstateSession = await sessionFrom(issuing.port, names[0]!);
    const nodeSession = await sessionFrom(node.port, names[0]!);
    const targets: Record<Kind, Target> = {
      'certstate full': certstate,
      'certstate resumed': { ...certstate, session: certstateSession },
      'node full': node,
      'node resumed': { ...node, session: nodeSession },
    };
    for (const kind of KINDS) if (flags['warmup-seconds'] > 0) await load(targets[kind].port, names, flags['warmup-seconds'], 0, targets[kind].session);
    const runs: Run[] = [];
    for (let round = 0; round < flags.runs; round++) {
      const order = KINDS.map((_, i) => KINDS[(i + round) % KINDS.length]!);
      for (const kind of order) {
        const run = await measure(targets[kind], names, round, kind);
        runs.push(run);
        console.error(`  round ${round + 1}/${flags.runs} ${kind.padEnd(17)} ${run.cpuPerHandshakeUs.toFixed(0)} µs CPU/handshake, ${run.handshakesPerSecond.toFixed(0)} handshakes/s`);
      }
    }
    report(runs);
    await Promise.all(children.map((child) => child.call('stop', undefined, 30_000).catch(() => undefined)));
    const r = ratios(runs);
    const perKind = Object.fromEntries(
      KINDS.map((kind) => [kind, {
        cpuPerHandshakeUs: summarize(cpuOf(runs, kind)),
        handshakesPerSecond: summarize(runs.filter((x) => x.kind === kind).map((x) => x.handshakesPerSecond)),
        errors: runs.filter((x) => x.kind === kind).reduce((n, x) => n + x.errors, 0),
      }]),
    );
    const file = await writeResult({ bench: 'resume', startedAt, options: { ...flags }, results: { kinds: perKind, ratios: r, runs }, bars: bars(runs) }, flags.json || undefined);
    console.error(`\nwrote ${file}`);
  } finally {
    await Promise.all(children.map((child) => child.close()));
    await storage.dispose();
  }
}

function report(runs: Run[]): void {
  const r = ratios(runs);
  const vsFull: Record<Kind, string> = {
    'certstate full': '1',
    'certstate resumed': spread(r.certstateResumedVsFull),
    'node full': '1',
    'node resumed': spread(r.nodeResumedVsFull),
  };
  const vsNode: Record<Kind, string> = {
    'certstate full': spread(r.certstateVsNodeFull),
    'certstate resumed': spread(r.certstateVsNodeResumed),
    'node full': '1',
    'node resumed': '1',
  };
  printTable(
    `TLS 1.3 handshakes, ${flags.seconds} s × ${flags.runs} runs, ${flags.clients}×${flags.concurrency} client connections (median (min–max))`,
    ['server', 'runs', 'CPU ms/handshake', '÷ its full handshake', '÷ plain Node', 'handshakes/s'],
    KINDS.map((kind) => {
      const cpu = summarize(cpuOf(runs, kind));
      const hs = summarize(runs.filter((x) => x.kind === kind).map((x) => x.handshakesPerSecond));
      return [kind, String(cpu.runs), spread(cpu, 1e-3), vsFull[kind], vsNode[kind], spread(hs, 1, 4)];
    }),
  );
  printBars(bars(runs));
}

await main();

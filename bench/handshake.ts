/**
 * bench:handshake — server CPU per full TLS handshake, certstate vs. two
 * baselines measured in the same run:
 *
 *   A. static     plain `tls.createServer` with one certificate
 *   B. map        a bare `Map` of N `SecureContext`s in `SNICallback`
 *   C. certstate  an engine managing N names with valid certificates
 *   D. certstate-backoff  the same names, each in failed-backoff with its
 *      still-valid certificate (a CA outage): bar ≤ 1.1 × certstate
 *
 * Optional servers (`--servers`) split the difference: the baselines
 * configured as `tlsOptions()` configures a server (`static-tickets`,
 * `static-like`, `map-like`), and `certstate-tls-alpn` (the JS ALPN callback
 * of a server that answers TLS-ALPN-01); see handshake/server.ts.
 *
 * Each server runs in its own process and measures its own CPU between
 * `begin` and `end`; the load client runs in worker threads of this process.
 * On 2 cores the client (≈3× the server's CPU per handshake) bounds
 * throughput, so CPU per handshake is the figure of merit and handshakes/s
 * is shown for information. Modes are interleaved round by round (in a
 * rotating order) and each certstate run is divided by the baselines of its
 * own round.
 *
 *   node --import tsx bench/handshake.ts [--names 10000] [--seconds 5] [--runs 3]
 */
import { forkTs, runWorker, type RpcChild } from './lib/children.js';
import { parseFlags } from './lib/args.js';
import { ensureDataset } from './lib/dataset.js';
import path from 'node:path';
import { RESULTS_DIR } from './lib/paths.js';
import { printBars, printTable, spread, writeResult, type BarVerdict } from './lib/report.js';
import { pairedRatios, summarize } from './lib/stats.js';
import type { ClientJob, ClientReport } from './handshake/client.js';
import type { EndReply, Mode, SetupReply } from './handshake/server.js';

const flags = parseFlags('bench/handshake.ts', {
  names: { default: 10_000, help: 'names loaded in the map and certstate servers' },
  seconds: { default: 5, help: 'length of one measured run per server' },
  runs: { default: 3, help: 'measured rounds (each runs every server once)' },
  clients: { default: 2, help: 'load client worker threads' },
  concurrency: { default: 16, help: 'handshakes in flight per client thread' },
  'warmup-seconds': { default: 1, help: 'unmeasured load per server before the runs (JIT, caches)' },
  'warm-every-name': { default: true, help: 'before the runs, one real handshake per name on the map and certstate servers (first-use costs are not steady state)' },
  alpn: { default: true, help: 'clients offer ALPN http/1.1, as browsers do' },
  profile: { default: false, help: 'write a CPU profile of every server (baselines too, to compare) to bench/results/profiles/' },
  servers: { default: 'static,map,certstate,certstate-backoff', help: 'servers to compare (static and map are the baselines; certstate-backoff serves every name in failed-backoff; map-alpn-callback adds a JS ALPNCallback to map; static-like and map-like are the baselines configured as tlsOptions() configures a server that answers TLS-ALPN-01: JS ALPN callback, session tickets through the same ticket-key callback; static-tickets and map-tickets the same with ALPNProtocols, as tlsOptions() configures a server that answers no TLS-ALPN-01; map-pem-strings and map-pem-buffers are map-tickets holding 10,000 PEM-sized values as strings or Buffers; certstate-tls-alpn is certstate with tlsOptions({ tlsAlpn01: true }))' },
  json: { default: '', help: 'write the JSON result here instead of bench/results/handshake.json' },
});

const KNOWN: Mode[] = ['static', 'static-tickets', 'static-like', 'map', 'map-tickets', 'map-pem-strings', 'map-pem-buffers', 'map-alpn-callback', 'map-like', 'certstate', 'certstate-tls-alpn', 'certstate-backoff'];
const MODES = flags.servers.split(',').map((m) => m.trim()) as Mode[];
for (const m of ['static', 'map', 'certstate'] as const) if (!MODES.includes(m)) throw new Error(`--servers must include ${m}`);
for (const m of MODES) if (!KNOWN.includes(m)) throw new Error(`--servers: unknown server ${m} (known: ${KNOWN.join(', ')})`);
/** Issue 14's bar (the first bar was 1.15). */
const BAR_RATIO = 1.05;
/** A name in failed-backoff with a still-valid certificate costs what a valid one does: within 10 %. */
const BACKOFF_BAR_RATIO = 1.1;

interface Run {
  round: number;
  mode: Mode;
  cpuPerHandshakeUs: number;
  handshakesPerSecond: number;
  serverHandshakes: number;
  clientErrors: number;
  clientP50Ms: number;
  clientP99Ms: number;
  /** Server GC pause time per handshake, µs (all GC, and full mark-compact GC only). */
  gcPerHandshakeUs: number;
  majorGcPerHandshakeUs: number;
}

/**
 * One handshake per name, in order, split over the client threads. A key's
 * first signature pays one-time setup in OpenSSL (e.g. its Montgomery
 * constants) that a long-running server has long paid.
 */
async function warmEveryName(server: RpcChild, port: number, names: string[]): Promise<number> {
  await server.call('begin');
  const reports = await Promise.all(
    Array.from({ length: flags.clients }, (_, i) => {
      const job: ClientJob = { port, names, seconds: 3600, concurrency: flags.concurrency, seed: i, alpn: flags.alpn, each: { offset: i, stride: flags.clients } };
      return runWorker<ClientReport>(new URL('./handshake/client.ts', import.meta.url), job, 3_600_000);
    }),
  );
  const errors = reports.reduce((n, r) => n + r.errors, 0);
  if (errors > 0) throw new Error(`warm-up: ${errors} handshakes failed (${reports.find((r) => r.firstError)?.firstError})`);
  const end = await server.call<EndReply>('end');
  return (end.cpuUserUs + end.cpuSystemUs) / Math.max(1, end.handshakes);
}

/** Server CPU per handshake during the one-per-name pass (each name's first real handshake), µs. */
const firstPass = new Map<Mode, number>();

async function load(port: number, names: string[], seconds: number, seed: number): Promise<ClientReport[]> {
  return Promise.all(
    Array.from({ length: flags.clients }, (_, i) => {
      const job: ClientJob = { port, names, seconds, concurrency: flags.concurrency, seed: seed * 101 + i, alpn: flags.alpn };
      return runWorker<ClientReport>(new URL('./handshake/client.ts', import.meta.url), job, (seconds + 30) * 1000);
    }),
  );
}

async function measure(server: RpcChild, port: number, names: string[], round: number, mode: Mode): Promise<Run> {
  await server.call('begin');
  const reports = await load(port, names, flags.seconds, round + 1);
  const end = await server.call<EndReply>('end');
  const clientHandshakes = reports.reduce((n, r) => n + r.handshakes, 0);
  const activeMs = Math.max(...reports.map((r) => r.activeMs));
  const errors = reports.reduce((n, r) => n + r.errors, 0);
  if (end.handshakes === 0) throw new Error(`${mode}: no handshake completed (${reports.find((r) => r.firstError)?.firstError ?? 'no error reported'})`);
  return {
    round,
    mode,
    cpuPerHandshakeUs: (end.cpuUserUs + end.cpuSystemUs) / end.handshakes,
    handshakesPerSecond: (clientHandshakes / activeMs) * 1000,
    serverHandshakes: end.handshakes,
    clientErrors: errors + end.clientErrors,
    clientP50Ms: Math.max(...reports.map((r) => r.p50Ms)),
    clientP99Ms: Math.max(...reports.map((r) => r.p99Ms)),
    gcPerHandshakeUs: (end.gcMs * 1000) / end.handshakes,
    majorGcPerHandshakeUs: (end.majorGcMs * 1000) / end.handshakes,
  };
}

async function main(): Promise<void> {
  const startedAt = new Date();
  // Profiles of the measured windows only (set-up and idle time left out), every server alike, to compare.
  const profileDir = flags.profile ? path.join(RESULTS_DIR, 'profiles', `handshake-${startedAt.toISOString().replace(/[:.]/g, '-')}`) : undefined;
  const dataset = await ensureDataset(flags.names);
  const servers = new Map<Mode, { child: RpcChild; setup: SetupReply }>();
  const children: RpcChild[] = [];
  try {
    console.error(`handshake: starting ${MODES.join(', ')} servers with ${flags.names} names…`);
    await Promise.all(
      MODES.map(async (mode) => {
        const child = forkTs(new URL('./handshake/server.ts', import.meta.url), profileDir ? [`--profile-dir=${profileDir}`] : []);
        children.push(child);
        // Building 10k SecureContexts takes a while on 2 busy cores: a generous bound.
        const setup = await child.call<SetupReply>('setup', { mode, names: flags.names }, 30 * 60_000);
        servers.set(mode, { child, setup });
      }),
    );
    for (const mode of MODES) {
      const { child, setup } = servers.get(mode)!;
      if (flags['warm-every-name'] && !mode.startsWith('static')) {
        const t0 = performance.now();
        firstPass.set(mode, await warmEveryName(child, setup.port, dataset.names));
        console.error(`  ${mode}: one handshake per name in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${firstPass.get(mode)!.toFixed(0)} µs CPU each`);
      }
      if (flags['warmup-seconds'] > 0) await load(setup.port, dataset.names, flags['warmup-seconds'], 0);
    }
    const runs: Run[] = [];
    for (let round = 0; round < flags.runs; round++) {
      // Rotate the order so no mode always runs first (or right after another one's GC debt).
      const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]!);
      for (const mode of order) {
        const { child, setup } = servers.get(mode)!;
        const run = await measure(child, setup.port, dataset.names, round, mode);
        runs.push(run);
        console.error(`  round ${round + 1}/${flags.runs} ${mode.padEnd(9)} ${run.cpuPerHandshakeUs.toFixed(0)} µs CPU/handshake, ${run.handshakesPerSecond.toFixed(0)} handshakes/s`);
      }
    }
    report(runs, servers);
    await Promise.all([...servers.values()].map(({ child }) => child.call('stop', undefined, 30_000).catch(() => undefined)));
    const file = await writeResult(result(startedAt, runs, servers), flags.json || undefined);
    console.error(`\nwrote ${file}`);
  } finally {
    await Promise.all(children.map((child) => child.close()));
  }
}

function byMode(runs: Run[], mode: Mode, field: keyof Run): number[] {
  return runs.filter((r) => r.mode === mode).sort((a, b) => a.round - b.round).map((r) => r[field] as number);
}

function ratios(runs: Run[]) {
  const cpu = (m: Mode) => byMode(runs, m, 'cpuPerHandshakeUs');
  return {
    certstateVsStatic: pairedRatios(cpu('certstate'), cpu('static')),
    certstateVsMap: pairedRatios(cpu('certstate'), cpu('map')),
    mapVsStatic: pairedRatios(cpu('map'), cpu('static')),
    backoffVsCertstate: MODES.includes('certstate-backoff') ? pairedRatios(cpu('certstate-backoff'), cpu('certstate')) : undefined,
    // Every server against both baselines, for the table (and for optional servers).
    vsStatic: Object.fromEntries(MODES.map((m) => [m, pairedRatios(cpu(m), cpu('static'))])) as Record<Mode, ReturnType<typeof pairedRatios>>,
    vsMap: Object.fromEntries(MODES.map((m) => [m, pairedRatios(cpu(m), cpu('map'))])) as Record<Mode, ReturnType<typeof pairedRatios>>,
    // Against the baselines configured as tlsOptions() configures a server (when measured): the engine's own share.
    certstateVsStaticLike: MODES.includes('static-like') ? pairedRatios(cpu('certstate'), cpu('static-like')) : undefined,
    certstateVsMapLike: MODES.includes('map-like') ? pairedRatios(cpu('certstate'), cpu('map-like')) : undefined,
    staticLikeVsStatic: MODES.includes('static-like') ? pairedRatios(cpu('static-like'), cpu('static')) : undefined,
    // The same for a server that answers no TLS-ALPN-01 (ALPNProtocols, tickets through the callback), and for one that does.
    certstateVsStaticTickets: MODES.includes('static-tickets') ? pairedRatios(cpu('certstate'), cpu('static-tickets')) : undefined,
    staticTicketsVsStatic: MODES.includes('static-tickets') ? pairedRatios(cpu('static-tickets'), cpu('static')) : undefined,
    certstateVsMapTickets: MODES.includes('map-tickets') ? pairedRatios(cpu('certstate'), cpu('map-tickets')) : undefined,
    // What 10,000 PEM-sized values held in the heap cost a handshake, as strings and as Buffers.
    pemStringsVsMapTickets: MODES.includes('map-pem-strings') && MODES.includes('map-tickets') ? pairedRatios(cpu('map-pem-strings'), cpu('map-tickets')) : undefined,
    pemBuffersVsMapTickets: MODES.includes('map-pem-buffers') && MODES.includes('map-tickets') ? pairedRatios(cpu('map-pem-buffers'), cpu('map-tickets')) : undefined,
    tlsAlpnVsCertstate: MODES.includes('certstate-tls-alpn') ? pairedRatios(cpu('certstate-tls-alpn'), cpu('certstate')) : undefined,
    tlsAlpnVsMapLike: MODES.includes('certstate-tls-alpn') && MODES.includes('map-like') ? pairedRatios(cpu('certstate-tls-alpn'), cpu('map-like')) : undefined,
  };
}

function bars(runs: Run[]): BarVerdict[] {
  const { certstateVsStatic: r, backoffVsCertstate: b, certstateVsStaticTickets: l } = ratios(runs);
  const likeNote = l ? `; ${l.median.toFixed(3)} × static configured alike (static-tickets: session tickets through the same callback, ALPNProtocols)` : '';
  return [
    {
      what: `server CPU per full TLS handshake, ${flags.names.toLocaleString('en-US')} names, random SNI`,
      bar: `≤ ${BAR_RATIO} × static`,
      measured: `${r.median.toFixed(3)} × static (runs ${r.min.toFixed(3)}–${r.max.toFixed(3)})${likeNote}`,
      met: r.median <= BAR_RATIO,
      ...(r.median <= BAR_RATIO ? {} : { note: `${((r.median - BAR_RATIO) * 100).toFixed(1)} points over` }),
    },
    ...(b
      ? [
          {
            what: 'the same, every name in failed-backoff with a still-valid certificate',
            bar: `≤ ${BACKOFF_BAR_RATIO} × certstate (valid)`,
            measured: `${b.median.toFixed(3)} × certstate (runs ${b.min.toFixed(3)}–${b.max.toFixed(3)})`,
            met: b.median <= BACKOFF_BAR_RATIO,
          },
        ]
      : []),
  ];
}

function report(runs: Run[], servers: Map<Mode, { setup: SetupReply }>): void {
  const rel = ratios(runs);
  const rows = MODES.map((mode) => {
    const cpu = summarize(byMode(runs, mode, 'cpuPerHandshakeUs'));
    const hs = summarize(byMode(runs, mode, 'handshakesPerSecond'));
    const vsStatic = mode === 'static' ? '1' : spread(rel.vsStatic[mode]);
    const vsMap = mode === 'map' ? '1' : mode === 'static' ? '—' : spread(rel.vsMap[mode]);
    const setup = servers.get(mode)!.setup;
    const gc = summarize(byMode(runs, mode, 'gcPerHandshakeUs'));
    return [mode, String(cpu.runs), spread(cpu, 1e-3), vsStatic, vsMap, spread(gc, 1e-3), spread(hs, 1, 4), setup.memory.rssMb.toFixed(0), setup.memory.heapUsedMb.toFixed(0)];
  });
  printTable(
    `Full TLS handshakes, ${flags.names.toLocaleString('en-US')} names, ${flags.seconds} s × ${flags.runs} runs, ${flags.clients}×${flags.concurrency} client connections (median (min–max))`,
    ['server', 'runs', 'CPU ms/handshake', '÷ static', '÷ map', 'of which GC, ms', 'handshakes/s', 'server RSS MB', 'heap MB'],
    rows,
  );
  const cs = servers.get('certstate')!.setup;
  const map = servers.get('map')!.setup;
  console.log(
    `\nset-up: map built ${flags.names} SecureContexts in ${(map.loadMs / 1000).toFixed(1)} s; certstate loaded ${flags.names} names in ${(cs.loadMs / 1000).toFixed(1)} s, then built each name's SecureContext (its first getCertificate) in ${(cs.warmMs / flags.names).toFixed(2)} ms a name.`,
  );
  if (firstPass.size) {
    console.log(
      `first real handshake of each name (context already built): ${[...firstPass].map(([m, us]) => `${m} ${(us / 1000).toFixed(2)} ms`).join(', ')} of server CPU; the runs above are the steady state after it.`,
    );
  }
  const like = [
    rel.staticTicketsVsStatic && `static-tickets ÷ static ${spread(rel.staticTicketsVsStatic)}`,
    rel.certstateVsStaticTickets && `certstate ÷ static-tickets ${spread(rel.certstateVsStaticTickets)}`,
    rel.certstateVsMapTickets && `certstate ÷ map-tickets ${spread(rel.certstateVsMapTickets)}`,
    rel.pemStringsVsMapTickets && `map-pem-strings ÷ map-tickets ${spread(rel.pemStringsVsMapTickets)}`,
    rel.pemBuffersVsMapTickets && `map-pem-buffers ÷ map-tickets ${spread(rel.pemBuffersVsMapTickets)}`,
    rel.staticLikeVsStatic && `static-like ÷ static ${spread(rel.staticLikeVsStatic)}`,
    rel.certstateVsStaticLike && `certstate ÷ static-like ${spread(rel.certstateVsStaticLike)}`,
    rel.certstateVsMapLike && `certstate ÷ map-like ${spread(rel.certstateVsMapLike)}`,
    rel.tlsAlpnVsCertstate && `certstate-tls-alpn ÷ certstate ${spread(rel.tlsAlpnVsCertstate)}`,
    rel.tlsAlpnVsMapLike && `certstate-tls-alpn ÷ map-like ${spread(rel.tlsAlpnVsMapLike)}`,
  ].filter(Boolean);
  if (like.length) console.log(`\nbaselines configured as tlsOptions() configures a server (-tickets: ALPNProtocols; -like: the JS ALPN callback of TLS-ALPN-01; both with tickets through the ticket-key callback): ${like.join('; ')}.`);
  printBars(bars(runs));
}

function result(startedAt: Date, runs: Run[], servers: Map<Mode, { setup: SetupReply }>) {
  const rel = ratios(runs);
  const perMode = Object.fromEntries(
    MODES.map((mode) => [
      mode,
      {
        cpuPerHandshakeUs: summarize(byMode(runs, mode, 'cpuPerHandshakeUs')),
        handshakesPerSecond: summarize(byMode(runs, mode, 'handshakesPerSecond')),
        clientP99Ms: summarize(byMode(runs, mode, 'clientP99Ms')),
        gcPerHandshakeUs: summarize(byMode(runs, mode, 'gcPerHandshakeUs')),
        majorGcPerHandshakeUs: summarize(byMode(runs, mode, 'majorGcPerHandshakeUs')),
        errors: byMode(runs, mode, 'clientErrors').reduce((a, b) => a + b, 0),
        setup: servers.get(mode)!.setup,
      },
    ]),
  );
  return {
    bench: 'handshake',
    startedAt,
    options: { ...flags },
    results: { modes: perMode, ratios: rel, firstPassCpuPerHandshakeUs: Object.fromEntries(firstPass), runs },
    bars: bars(runs),
  };
}

await main();

/**
 * bench:herd — the seed scenario under load: N concurrent handshakes for a
 * name whose certificate expired, while its one renewal attempt is in
 * flight; the attempt fails (or succeeds) after a delay.
 *
 * Measured, per outcome: issuance attempts (must be 1, and still 1 after a
 * second herd inside the backoff window), time from the attempt's end until
 * the last handshake is answered (bar: 50 ms) as a ratio to resolving N
 * plain promises, heap per waiting handshake, heap left after, and call depth
 * while answering (must not grow with N). In-process with
 * `engine.getCertificate()`, then over real TLS with fewer connections.
 *
 *   node --import tsx bench/herd.ts [--handshakes 10000] [--delay-ms 1000] [--runs 3] [--tls-connections 1000]
 */
import { parseFlags } from './lib/args.js';
import { fmt, printBars, printTable, spread, writeResult, type BarVerdict } from './lib/report.js';
import { pairedRatios, summarize } from './lib/stats.js';
import { inProcessRun, plainPromisesMs, type HerdRun, type Outcome } from './herd/in-process.js';
import { tlsHerdRun, type TlsHerdRun } from './herd/tls-herd.js';

const flags = parseFlags('bench/herd.ts', {
  handshakes: { default: 10_000, help: 'concurrent in-process handshakes (getCertificate calls)' },
  'delay-ms': { default: 1000, help: 'how long the attempt runs before it fails or succeeds' },
  runs: { default: 3, help: 'repetitions of each measurement' },
  'tls-connections': { default: 1000, help: 'concurrent real TLS connections in the TLS variant (0: skip)' },
  json: { default: '', help: 'write the JSON result here instead of bench/results/herd.json' },
});

const OUTCOMES: Outcome[] = ['fail', 'succeed'];
const BAR_MS = 50;

async function main(): Promise<void> {
  const startedAt = new Date();
  const n = flags.handshakes;
  const runs: HerdRun[] = [];
  const baselineMs: Record<Outcome, number[]> = { fail: [], succeed: [] };
  for (let r = 0; r < flags.runs; r++) {
    for (const outcome of OUTCOMES) {
      const run = await inProcessRun(outcome, n, flags['delay-ms'], false);
      runs.push(run);
      baselineMs[outcome].push(await plainPromisesMs(n));
      console.error(`  run ${r + 1}/${flags.runs} ${outcome.padEnd(7)} attempts ${run.attempts}, last answer ${run.lastAnswerAfterEndMs.toFixed(1)} ms after the attempt's end`);
    }
  }
  // Stack capture costs ~10 µs a promise: its own pass, never in a timed one.
  // Depth is compared between a herd of N and one of N/10: recursion would deepen with N.
  const depthRuns: HerdRun[] = [];
  const smallHerd = Math.max(10, Math.round(n / 10));
  for (const outcome of OUTCOMES) {
    depthRuns.push(await inProcessRun(outcome, n, flags['delay-ms'], true));
    depthRuns.push(await inProcessRun(outcome, smallHerd, flags['delay-ms'], true));
  }

  const tlsRuns: TlsHerdRun[] = [];
  if (flags['tls-connections'] > 0) {
    for (let r = 0; r < flags.runs; r++) {
      for (const outcome of OUTCOMES) {
        for (const server of ['baseline', 'certstate'] as const) {
          const run = await tlsHerdRun(server, outcome, flags['tls-connections']);
          tlsRuns.push(run);
          console.error(`  tls run ${r + 1}/${flags.runs} ${outcome.padEnd(7)} ${server.padEnd(9)} last SNI answer ${run.lastAnswerAfterEndMs.toFixed(1)} ms after the end`);
        }
      }
    }
  }

  const summary = summarise(runs, baselineMs, depthRuns, tlsRuns);
  printReport(summary);
  const verdicts = bars(summary);
  printBars(verdicts);
  const file = await writeResult(
    {
      bench: 'herd',
      startedAt,
      options: { ...flags },
      results: { ...summary, runs, depthRuns, tlsRuns },
      bars: verdicts,
    },
    flags.json || undefined,
  );
  console.error(`\nwrote ${file}`);
}

function summarise(runs: HerdRun[], baselineMs: Record<Outcome, number[]>, depthRuns: HerdRun[], tlsRuns: TlsHerdRun[]) {
  const inProcess = Object.fromEntries(
    OUTCOMES.map((outcome) => {
      const mine = runs.filter((r) => r.outcome === outcome);
      const ms = mine.map((r) => r.lastAnswerAfterEndMs);
      const depth = depthRuns.find((r) => r.outcome === outcome && r.handshakes === flags.handshakes)?.depth;
      const smallDepth = depthRuns.find((r) => r.outcome === outcome && r.handshakes !== flags.handshakes)?.depth;
      return [
        outcome,
        {
          attempts: summarize(mine.map((r) => r.attempts)),
          answered: summarize(mine.map((r) => r.answered)),
          correct: summarize(mine.map((r) => r.correct)),
          lastAnswerAfterEndMs: summarize(ms),
          lastAnswerAfterTransitionMs: summarize(mine.map((r) => r.lastAnswerAfterTransitionMs)),
          releaseCpuMs: summarize(mine.map((r) => r.releaseCpuMs)),
          plainPromisesMs: summarize(baselineMs[outcome]),
          ratioToPlainPromises: pairedRatios(ms, baselineMs[outcome]),
          heapPerWaiterBytes: summarize(mine.map((r) => r.heapPerWaiterBytes)),
          residualHeapMb: summarize(mine.map((r) => r.residualHeapMb)),
          backoffAttempts: summarize(mine.flatMap((r) => (r.backoff ? [r.backoff.attempts] : []))),
          backoffAllAnsweredMs: summarize(mine.flatMap((r) => (r.backoff ? [r.backoff.allAnsweredMs] : []))),
          backoffCpuMs: summarize(mine.flatMap((r) => (r.backoff ? [r.backoff.cpuMs] : []))),
          depth,
          smallHerdDepth: smallDepth,
        },
      ];
    }),
  ) as Record<Outcome, ReturnType<typeof inProcessSummaryShape>>;
  const tls = Object.fromEntries(
    OUTCOMES.map((outcome) => {
      const of = (server: 'certstate' | 'baseline') => tlsRuns.filter((r) => r.outcome === outcome && r.server === server);
      const cs = of('certstate');
      const base = of('baseline');
      return [
        outcome,
        {
          connections: flags['tls-connections'],
          attempts: summarize(cs.map((r) => r.attempts)),
          answered: summarize(cs.map((r) => r.answered)),
          certstateMs: summarize(cs.map((r) => r.lastAnswerAfterEndMs)),
          baselineMs: summarize(base.map((r) => r.lastAnswerAfterEndMs)),
          ratioToBaseline: pairedRatios(cs.map((r) => r.lastAnswerAfterEndMs), base.map((r) => r.lastAnswerAfterEndMs)),
          clientOk: summarize(cs.map((r) => r.clientOk)),
          clientFailed: summarize(cs.map((r) => r.clientFailed)),
        },
      ];
    }),
  );
  return { inProcess, tls: tlsRuns.length ? tls : undefined };
}

// Only for typing `summarise`'s output.
function inProcessSummaryShape() {
  const s = summarize([]);
  return {
    attempts: s, answered: s, correct: s, lastAnswerAfterEndMs: s, lastAnswerAfterTransitionMs: s, releaseCpuMs: s, plainPromisesMs: s,
    ratioToPlainPromises: s, heapPerWaiterBytes: s, residualHeapMb: s, backoffAttempts: s, backoffAllAnsweredMs: s, backoffCpuMs: s,
    depth: undefined as HerdRun['depth'],
    smallHerdDepth: undefined as HerdRun['depth'],
  };
}

type Summary = ReturnType<typeof summarise>;

function printReport(s: Summary): void {
  const n = flags.handshakes.toLocaleString('en-US');
  printTable(
    `In-process herd: ${n} concurrent getCertificate() for an expired name, attempt ends after ${flags['delay-ms']} ms (median (min–max) of ${flags.runs} runs)`,
    ['attempt', 'attempts', 'answered as expected', 'last answer after attempt end, ms', '÷ plain promises', 'after transition, ms', 'CPU in that window, ms', 'heap/waiter, bytes', 'heap left after, MB', 'max call depth: N vs N/10', 'backoff herd: attempts, all answered ms (CPU ms)'],
    OUTCOMES.map((o) => {
      const r = s.inProcess[o];
      const d = r.depth;
      return [
        o === 'fail' ? 'fails' : 'succeeds',
        spread(r.attempts, 1, 1),
        `${spread(r.correct, 1, 1)} / ${n}`,
        spread(r.lastAnswerAfterEndMs),
        spread(r.ratioToPlainPromises),
        spread(r.lastAnswerAfterTransitionMs),
        spread(r.releaseCpuMs),
        spread(r.heapPerWaiterBytes, 1, 4),
        spread(r.residualHeapMb),
        d && r.smallHerdDepth ? `${d.maxDepth} vs ${r.smallHerdDepth.maxDepth}` : '—',
        r.backoffAttempts.runs ? `${spread(r.backoffAttempts, 1, 1)}, ${spread(r.backoffAllAnsweredMs)} (${spread(r.backoffCpuMs)})` : '—',
      ];
    }),
  );
  console.log(`\nbaseline: resolving ${n} plain promises at once took ${spread(s.inProcess.fail.plainPromisesMs)} ms.`);
  if (!s.tls) return;
  printTable(
    `Real TLS herd: ${flags['tls-connections']} concurrent connections, SNI answers timed server-side (median (min–max) of ${flags.runs} runs)`,
    ['attempt', 'attempts', 'SNI answered', 'certstate: last answer after end, ms', 'baseline: parked callbacks released, ms', '÷ baseline', 'clients ok / refused'],
    OUTCOMES.map((o) => {
      const r = s.tls![o]!;
      return [
        o === 'fail' ? 'fails' : 'succeeds',
        spread(r.attempts, 1, 1),
        spread(r.answered, 1, 4),
        spread(r.certstateMs),
        spread(r.baselineMs),
        spread(r.ratioToBaseline),
        `${fmt(r.clientOk.median, 4)} / ${fmt(r.clientFailed.median, 4)}`,
      ];
    }),
  );
}

function bars(s: Summary): BarVerdict[] {
  const fail = s.inProcess.fail;
  const oneAttempt = fail.attempts.max === 1 && fail.attempts.min === 1 && fail.backoffAttempts.max === 1;
  const worst = Math.max(fail.lastAnswerAfterEndMs.max, s.tls?.fail?.certstateMs.max ?? 0);
  const d = fail.depth;
  const small = fail.smallHerdDepth;
  // A few frames of slack: which internal promise happens to resolve deepest may differ between runs.
  const flat = d !== undefined && small !== undefined && d.maxDepth <= small.maxDepth + 3;
  const n = flags.handshakes.toLocaleString('en-US');
  return [
    {
      what: `${n} concurrent handshakes, expired name, renewal fails: issuance attempts`,
      bar: 'exactly 1 per backoff window',
      measured: `${fail.attempts.max} during the herd, ${fail.backoffAttempts.max} after a second herd inside the backoff`,
      met: oneAttempt,
    },
    {
      what: `${n} concurrent handshakes: every one answered after the attempt's end`,
      bar: `within ${BAR_MS} ms`,
      measured: `worst run ${worst.toFixed(1)} ms (in-process median ${fail.lastAnswerAfterEndMs.median.toFixed(1)} ms = ${fail.ratioToPlainPromises.median.toFixed(1)} × plain promises)`,
      met: worst <= BAR_MS && fail.correct.min === flags.handshakes,
      ...(worst <= BAR_MS ? {} : { note: `${(worst - BAR_MS).toFixed(1)} ms over` }),
    },
    {
      what: 'call depth while answering the herd',
      bar: 'no growth with waiters',
      measured: d && small ? `max ${d.maxDepth} frames with ${flags.handshakes} waiters, ${small.maxDepth} with ${Math.max(10, Math.round(flags.handshakes / 10))} (${d.samples} promise resolutions watched)` : 'not measured',
      met: flat,
    },
  ];
}

await main();

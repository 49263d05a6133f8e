/**
 * The chart's start-up question per name (`questions.afterLoad`): µs per name
 * asked of the chart itself (an XState transition) against the memoised
 * question (questions.ts: the chart asked once per combination of its
 * guards' outcomes), over the loads a warm restart hands it (a certificate,
 * no failure record: the start-up index), and over mixed loads (failure
 * records, backoffs, floors, renewal times given). Rounds alternate the two;
 * the ratio is of medians from the same process.
 *
 *   node --import tsx bench/tools/after-load.ts [--names 100000] [--rounds 7]
 */
import { createCertificateMachine, type LoadedState } from '../../src/machines/certificate.js';
import { chartDecisions } from '../../src/machines/decisions.js';
import { defaultTimingPolicy } from '../../src/machines/policy.js';
import { chartQuestions } from '../../src/machines/questions.js';
import type { CertificateMeta } from '../../src/types.js';
import { parseFlags } from '../lib/args.js';
import { summarize } from '../lib/stats.js';

const flags = parseFlags('bench/tools/after-load.ts', {
  names: { default: 100_000, help: 'loads asked per round' },
  rounds: { default: 7, help: 'rounds of each (median reported)' },
});

const DAY = 86_400_000;
const NOW = Date.now();
let seed = 0x1234567;
const rand = () => ((seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
const cert = (i: number, fromDays: number): CertificateMeta => ({
  fingerprint: `F${i}`,
  serial: `${i}`,
  names: [`n${i}.example`],
  notBefore: NOW + fromDays * DAY,
  notAfter: NOW + (fromDays + 90) * DAY,
  issuer: 'CN=bench',
  issuerId: 'bench',
});
// A warm restart, as bench:scale's dataset: certificates issued over the last 30 days (valid, renewal not due).
const warm: LoadedState[] = Array.from({ length: flags.names }, (_, i) => ({ certificate: cert(i, -Math.floor(rand() * 30)) }));
const mixed: LoadedState[] = Array.from({ length: flags.names }, (_, i) => ({
  certificate: cert(i, -Math.floor(rand() * 120)),
  ...(rand() < 0.3 ? { failure: { attempts: 1 + Math.floor(rand() * 4), nextAttemptAt: NOW + Math.floor((rand() - 0.5) * DAY) } } : {}),
  ...(rand() < 0.3 ? { renewAt: NOW + Math.floor((rand() - 0.2) * 30 * DAY) } : {}),
}));

const deps = { now: () => NOW, random: rand, policy: defaultTimingPolicy };
const chart = chartQuestions(createCertificateMachine(deps), () => NOW);
const memo = chartQuestions(createCertificateMachine(deps), () => NOW, false, chartDecisions(deps));

function round(ask: (loaded: LoadedState) => unknown, loads: LoadedState[]): number {
  const t0 = performance.now();
  for (const loaded of loads) ask(loaded);
  return ((performance.now() - t0) * 1000) / loads.length;
}

for (const [what, loads] of [
  ['warm restart (certificate only)', warm],
  ['mixed (some due for renewal, failures, backoffs, renewal times)', mixed],
] as const) {
  const times = { chart: [] as number[], memo: [] as number[] };
  for (let r = 0; r < flags.rounds; r++) {
    times.chart.push(round(chart.afterLoad, loads));
    times.memo.push(round(memo.afterLoad, loads));
  }
  const [c, m] = [summarize(times.chart).median, summarize(times.memo).median];
  console.log(`${what}: chart ${c.toFixed(2)} µs a name, memoised ${m.toFixed(2)} µs (${(m / c).toFixed(3)} ×), ${flags.names} names, median of ${flags.rounds} rounds`);
}

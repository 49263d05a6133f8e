/**
 * The benches never rot: each runs here at a small size, as the child
 * process `npm run bench:*` would start, and must finish with a JSON result
 * of the expected shape. Timings are not asserted (this machine is shared
 * and noisy; BENCHMARKS.md holds the numbers from full-size runs) — but
 * the correctness facts each bench checks are: one issuance attempt for
 * a herd, every waiter answered, every name loaded.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { backendSkip } from './helpers/backends.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const out = mkdtempSync(path.join(tmpdir(), 'certstate-bench-test-'));
after(() => rmSync(out, { recursive: true, force: true }));

interface Summary {
  runs: number;
  min: number;
  median: number;
  max: number;
}

/** Run `bench/<name>.ts` with `args`; resolves with its JSON result. Killed (by its pid) after `timeoutMs`. */
async function runBench(name: string, args: string[], timeoutMs: number): Promise<Record<string, any>> {
  const json = path.join(out, `${name}.json`);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'bench', `${name}.ts`), ...args, '--json', json], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  assert.equal(code, 0, `bench/${name}.ts exited with ${code}:\n${output}`);
  const result = JSON.parse(readFileSync(json, 'utf8')) as Record<string, any>;
  assertCommonShape(result, name);
  return result;
}

function assertSummary(s: unknown, what: string): asserts s is Summary {
  const v = s as Summary;
  assert.ok(v && typeof v === 'object', `${what} is a summary`);
  for (const k of ['runs', 'min', 'median', 'max'] as const) assert.equal(typeof v[k], 'number', `${what}.${k} is a number`);
  assert.ok(v.runs >= 1, `${what} has at least one run`);
  assert.ok(v.min <= v.median && v.median <= v.max, `${what}: min ≤ median ≤ max`);
}

function assertCommonShape(result: Record<string, any>, name: string): void {
  assert.equal(result.bench, name);
  assert.equal(result.schema, 1);
  assert.match(result.command, new RegExp(`bench/${name}\\.ts`));
  assert.ok(result.machine.nproc >= 1 && typeof result.machine.cpuModel === 'string' && result.machine.node === process.version);
  assert.ok(Array.isArray(result.bars) && result.bars.length >= 1, 'judges at least one bar row');
  for (const bar of result.bars) {
    assert.equal(typeof bar.what, 'string');
    assert.equal(typeof bar.bar, 'string');
    assert.equal(typeof bar.measured, 'string');
    assert.ok(bar.met === true || bar.met === false || bar.met === 'n/a');
  }
}

describe('benches run at a small size and report what BENCHMARKS.md quotes', { concurrency: 1 }, () => {
  it('bench:handshake', async () => {
    const r = await runBench('handshake', ['--names', '200', '--seconds', '1', '--runs', '1', '--warmup-seconds', '0', '--clients', '1', '--concurrency', '4'], 120_000);
    for (const mode of ['static', 'map', 'certstate', 'certstate-backoff']) {
      assertSummary(r.results.modes[mode].cpuPerHandshakeUs, `${mode} CPU per handshake`);
      assertSummary(r.results.modes[mode].handshakesPerSecond, `${mode} handshakes/s`);
    }
    assertSummary(r.results.ratios.certstateVsStatic, 'certstate ÷ static');
    assertSummary(r.results.ratios.certstateVsMap, 'certstate ÷ map');
    assertSummary(r.results.ratios.backoffVsCertstate, 'certstate in failed-backoff ÷ certstate');
    assert.equal(r.results.modes.certstate.errors, 0, 'every certstate handshake succeeded');
    assert.equal(r.results.modes['certstate-backoff'].errors, 0, 'every handshake of a name in failed-backoff got its still-valid certificate');
  });

  it('bench:resume', async () => {
    const r = await runBench('resume', ['--names', '20', '--seconds', '1', '--runs', '1', '--warmup-seconds', '0', '--clients', '1', '--concurrency', '4'], 120_000);
    for (const kind of ['certstate full', 'certstate resumed', 'node full', 'node resumed']) {
      assertSummary(r.results.kinds[kind].cpuPerHandshakeUs, `${kind} CPU per handshake`);
      assert.equal(r.results.kinds[kind].errors, 0, `${kind}: every handshake succeeded`);
    }
    // The bench itself refuses a run where a resumption fell back to a full handshake.
    for (const run of r.results.runs) assert.equal(run.resumed, run.kind.endsWith('resumed') ? run.handshakes : 0, `${run.kind}: resumed as expected`);
    assertSummary(r.results.ratios.certstateResumedVsFull, 'certstate resumed ÷ full');
    assertSummary(r.results.ratios.nodeResumedVsFull, 'node resumed ÷ full');
  });

  it('bench:herd', async () => {
    const r = await runBench('herd', ['--handshakes', '1000', '--runs', '1', '--delay-ms', '100', '--tls-connections', '20'], 120_000);
    for (const outcome of ['fail', 'succeed']) {
      const s = r.results.inProcess[outcome];
      assertSummary(s.lastAnswerAfterEndMs, `${outcome}: last answer after the attempt's end`);
      assertSummary(s.ratioToPlainPromises, `${outcome}: ratio to plain promises`);
      assertSummary(s.heapPerWaiterBytes, `${outcome}: heap per waiter`);
      assert.equal(s.attempts.max, 1, `${outcome}: one issuance attempt for the herd`);
      assert.equal(s.correct.min, 1000, `${outcome}: every handshake got the attempt's outcome`);
      assert.equal(typeof s.depth.maxDepth, 'number');
      assert.equal(r.results.tls[outcome].answered.min, 20, `${outcome}: every TLS handshake answered`);
    }
    assert.equal(r.results.inProcess.fail.backoffAttempts.max, 1, 'no attempt during the backoff');
  });

  it('bench:scale (the million-name path at 1,500: bulk start-up read, sleeping names, paged status, ARI)', async () => {
    // More names than maxLiveActors (1,000): the start-up goes through the bulk read and 500 names sleep.
    const r = await runBench('scale', ['--names', '1500', '--idle-seconds', '1', '--status-calls', '2', '--sample', '100'], 120_000);
    for (const k of ['firstServedMs', 'lastServedMs', 'sampleServedMs', 'servingMs', 'startResolvedMs', 'rssMb', 'heapPerNameBytes', 'idleCpuMsPerMinute', 'steadyIdleCpuMsPerMinute', 'statusMs']) assertSummary(r.results.engine[k], `engine ${k}`);
    for (const k of ['statusFirstPageMs', 'statusLastPageMs', 'statusPagedWalkMs', 'statusSummaryMs', 'statusAsyncWalkMs', 'ariRequestsAtStart', 'timers']) assertSummary(r.results.engine[k], `engine ${k}`);
    assert.ok(r.results.engine.stats[0].sleeping >= 500, 'names beyond maxLiveActors sleep');
    for (const k of ['allReadMs', 'heapPerNameBytes']) assertSummary(r.results.baseline[k], `baseline ${k}`);
    assertSummary(r.results.ratios.lastServed, 'last served ÷ baseline');
    assert.equal(r.results.engine.notServing.max, 0, 'every name is served after start');
    assert.equal(r.results.engine.stats[0].names, 1500, 'engine.stats reported');
    // The start-up index: a cold start wrote it, the measured (warm) start read it, and wrote it again after its check.
    for (const k of ['startResolvedMs', 'indexWrittenMs', 'rssMb']) assertSummary(r.results.cold[k], `cold ${k}`);
    assertSummary(r.results.engine.indexWrittenMs, 'warm start: index checked and written');
    // Copies (the default): nothing changed the files since the index was written, so its check read none.
    assert.equal(r.results.engine.checkReads.max, 0, 'the warm start re-read no file: every index line matched');
    assertSummary(r.results.engine.checkPeakRssMb, 'warm start: peak RSS while the check ran');
    assert.equal(r.results.cold.notServing.max, 0, 'every name is served after a cold start');
  });

  it('bench:scale --storage postgres (the same path on PostgreSQL at 1,500: the table seeded once, a plain pg loader as the baseline, the start-up index in a table; fails under CI without PostgreSQL)', async (t) => {
    const skip = await backendSkip('postgres');
    if (skip) return void t.skip(skip);
    const r = await runBench('scale', ['--storage', 'postgres', '--names', '1500', '--idle-seconds', '1', '--status-calls', '2', '--sample', '100'], 180_000);
    assert.equal(r.options.storage, 'postgres');
    for (const k of ['firstServedMs', 'lastServedMs', 'sampleServedMs', 'startResolvedMs', 'startCpuMs', 'rssMb', 'heapPerNameBytes', 'steadyIdleCpuMsPerMinute', 'statusMs', 'statusLastPageMs', 'statusSummaryMs']) assertSummary(r.results.engine[k], `engine ${k}`);
    for (const k of ['allReadMs', 'allReadCpuMs', 'heapPerNameBytes']) assertSummary(r.results.baseline[k], `baseline ${k}`);
    assertSummary(r.results.ratios.startResolved, 'start() resolved ÷ the plain pg loader');
    assert.ok(r.results.engine.stats[0].sleeping >= 500, 'names beyond maxLiveActors sleep (read through the bulk read)');
    assert.equal(r.results.engine.notServing.max, 0, 'every name is served after start');
    // The start-up index in PostgreSQL: a cold start wrote it, the measured (warm) start read it, and wrote it again after its check.
    for (const k of ['startResolvedMs', 'indexWrittenMs', 'rssMb']) assertSummary(r.results.cold[k], `cold ${k}`);
    assertSummary(r.results.engine.indexWrittenMs, 'warm start: index checked and written');
    assert.equal(r.results.cold.notServing.max, 0, 'every name is served after a cold start');
  });

  it('bench:import: the import loads no ACME client, node-forge or pino', async () => {
    const r = await runBench('import', ['--runs', '3'], 300_000);
    assertSummary(r.results.baselineMs, "import('node:tls') process");
    assertSummary(r.results.subjectMs, "import('certstate') process");
    assertSummary(r.results.costMs, 'cost over the baseline');
    assertSummary(r.results.ratio, 'certstate ÷ node:tls');
    assert.deepEqual(r.results.heavyLoaded, [], 'heavy packages are loaded at first use, not by the import');
  });

  it('bench:issue (Pebble; reports a skip when Pebble or the ACME issuer is missing)', async () => {
    const r = await runBench('issue', ['--sequential', '2', '--concurrent', '5'], 120_000);
    if (r.skipped) {
      assert.ok(r.skipped.length > 0 && r.bars[0].met === 'n/a', `skipped with a reason: ${r.skipped}`);
      return;
    }
    assertSummary(r.results.engine.sequentialMs, 'engine first-handshake latency');
    assertSummary(r.results.auto.sequentialMs, 'auto() latency');
    assertSummary(r.results.ratios.sequentialMedian, 'engine ÷ auto()');
    assert.equal(r.results.engine.failures, 0, `engine failures: ${r.results.engine.firstFailure}`);
    assert.equal(r.results.engineOrders, 1 + 2 + 5, 'one order per new name');
    // The split of each first handshake (bench/issue/timeline.ts), both sides.
    for (const side of ['engine', 'auto'] as const) {
      for (const part of ['total', 'before', 'order', 'after', 'requests']) assertSummary(r.results[side].split[part], `${side}: ${part}`);
    }
  });
});

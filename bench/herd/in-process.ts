/**
 * The herd in-process: N concurrent `engine.getCertificate()` calls (what
 * `SNICallback` does per handshake) for the expired name, the attempt ended
 * after `delayMs`, and every answer timed. Plus the baseline: N plain
 * promises resolved at once, the least any runtime can do for N waiters.
 */
import { memoryAfterGc } from '../lib/memory.js';
import { depthProbe, type DepthReport } from './depth.js';
import { expiredScenario, HERD_NAME } from './scenario.js';

export type Outcome = 'fail' | 'succeed';

export interface HerdRun {
  outcome: Outcome;
  handshakes: number;
  /** `issue()` calls during the herd: must be 1. */
  attempts: number;
  answered: number;
  /** Answers that were what the attempt's outcome says they should be. */
  correct: number;
  /** From the issuer's settle to the last answer, ms. */
  lastAnswerAfterEndMs: number;
  /** From the engine's end-of-attempt transition to the last answer, ms. */
  lastAnswerAfterTransitionMs: number;
  /** CPU this process spent from the attempt's end to the last answer, ms: robust to neighbours on a shared machine. */
  releaseCpuMs: number;
  /** Heap held per waiting handshake, bytes (after GC, all N waiting). */
  heapPerWaiterBytes: number;
  /** Heap still held once every handshake was answered, MB (after GC; ~0 means no leak). */
  residualHeapMb: number;
  /** During backoff (fail only): a second herd of N, attempts after it and ms until all answered. */
  backoff?: { attempts: number; answered: number; allAnsweredMs: number; cpuMs: number };
  depth?: DepthReport;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Fire `n` calls of `call`, resolve with their answer times once all have settled (bounded). */
function herd(n: number, call: () => Promise<unknown>, judge: (ok: boolean, value: unknown) => boolean, timeoutMs: number) {
  const times = new Float64Array(n);
  let answered = 0;
  let correct = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  for (let i = 0; i < n; i++) {
    const record = (ok: boolean) => (value: unknown) => {
      times[i] = performance.now();
      if (judge(ok, value)) correct++;
      if (++answered === n) done();
    };
    call().then(record(true), record(false));
  }
  let timer: NodeJS.Timeout | undefined;
  const settled = Promise.race([all, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]).then(() => {
    clearTimeout(timer);
    return { times: times.subarray(0, n), answered: () => answered, correct: () => correct };
  });
  return settled;
}

export async function inProcessRun(outcome: Outcome, n: number, delayMs: number, probeDepth: boolean): Promise<HerdRun> {
  const sc = await expiredScenario(n);
  try {
    const judge = (ok: boolean, value: unknown) =>
      outcome === 'fail'
        ? !ok && (value as Error).name === 'CertificateUnavailableError'
        : ok && (value as { meta: { notAfter: number } }).meta.notAfter > Date.now();
    const before = memoryAfterGc();
    const herdStart = performance.now();
    const pending = herd(n, () => sc.engine.getCertificate(HERD_NAME), judge, 120_000);
    const waiting = memoryAfterGc();
    // The attempt "fails (or succeeds) after a delay": the herd waits that long.
    await sleep(Math.max(0, delayMs - (performance.now() - herdStart)));
    const probe = probeDepth ? depthProbe() : undefined;
    const cpu0 = process.cpuUsage();
    const endAt = sc.issuer.settle(outcome === 'fail' ? { error: 'bench: CA unavailable' } : { bundle: sc.fresh });
    const result = await pending;
    const cpu = process.cpuUsage(cpu0);
    const depth = probe?.stop();
    let last = 0;
    for (const t of result.times) if (t > last) last = t;
    const attempts = sc.issuer.calls;
    const after = memoryAfterGc();

    let backoff: HerdRun['backoff'];
    if (outcome === 'fail') {
      // Inside the backoff window: answered at once with the recorded error, and no new attempt.
      const t0 = performance.now();
      const againCpu0 = process.cpuUsage();
      const again = await herd(n, () => sc.engine.getCertificate(HERD_NAME), (ok) => !ok, 60_000);
      const againCpu = process.cpuUsage(againCpu0);
      let lastAgain = 0;
      for (const t of again.times) if (t > lastAgain) lastAgain = t;
      backoff = { attempts: sc.issuer.calls, answered: again.answered(), allAnsweredMs: lastAgain - t0, cpuMs: (againCpu.user + againCpu.system) / 1000 };
    }
    return {
      outcome,
      handshakes: n,
      attempts,
      answered: result.answered(),
      correct: result.correct(),
      lastAnswerAfterEndMs: last - endAt,
      lastAnswerAfterTransitionMs: last - (sc.endedAt() ?? endAt),
      releaseCpuMs: (cpu.user + cpu.system) / 1000,
      heapPerWaiterBytes: ((waiting.heapUsedMb - before.heapUsedMb) * 2 ** 20) / n,
      residualHeapMb: after.heapUsedMb - before.heapUsedMb,
      ...(backoff ? { backoff } : {}),
      ...(depth ? { depth } : {}),
    };
  } finally {
    await sc.engine.stop();
  }
}

/** Baseline: resolve `n` plain promises at once; ms from the first resolve to the last callback. */
export async function plainPromisesMs(n: number): Promise<number> {
  const resolvers: Array<() => void> = [];
  let last = 0;
  let left = n;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  for (let i = 0; i < n; i++) {
    new Promise<void>((resolve) => resolvers.push(resolve)).then(() => {
      last = performance.now();
      if (--left === 0) done();
    });
  }
  const t0 = performance.now();
  for (const resolve of resolvers) resolve();
  await all;
  return last - t0;
}

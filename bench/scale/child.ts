/**
 * Child process for bench:scale: holds either the baseline (the names'
 * files read with plain fs into a Map) or an engine managing every name in
 * file storage, so its RSS, heap and CPU are measured alone.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileStorage } from '../../src/adapters/storage/file.js';
import type { CertEngine } from '../../src/engine/engine.js';
import { keys } from '../../src/storage-keys.js';
import { serveRpc } from '../lib/children.js';
import { engineModule, refusingIssuer } from '../lib/engine-module.js';
import { nameOf } from '../lib/dataset.js';
import { memoryAfterGc, type MemoryReading } from '../lib/memory.js';
import { summarize, type Summary } from '../lib/stats.js';

export interface LoadReply {
  /** Time until the first name is served (engine) / read (baseline), ms. */
  firstMs: number;
  /** Time until the last name is served / read, ms. */
  lastMs: number;
  /** Time until everything is loaded (`start()` resolved / all files read), ms. */
  allMs: number;
  /** Engine only: time until every name of an evenly spread sample had its first handshake served, ms (asked at start). */
  sampleMs?: number;
  /** Engine only: how many names the sample held, and the median / p95 time to each one's first answer, ms. */
  sample?: { count: number; p50Ms: number; p95Ms: number };
  /** Engine only: `engine.stats` once `start()` resolved. */
  stats?: Record<string, number>;
  before: MemoryReading;
  after: MemoryReading;
  /** Engine only: names not in a serving state after start (e.g. load errors). */
  notServing?: number;
  states?: Record<string, number>;
  /** Engine only: why names were not served (first few). */
  errors?: string[];
}

export interface IdleReply {
  /** Wall time the idle period actually took (longer than asked when the engine is busy). */
  seconds: number;
  cpuMs: number;
  /** CPU per window of `seconds / 6`, ms: the first windows carry V8's post-load GCs, the rest show the steady state. */
  windowsCpuMs: number[];
  windowSeconds: number;
}


let engine: CertEngine | undefined;
let baseline: Map<string, unknown> | undefined;

const names = (count: number) => Array.from({ length: count }, (_, i) => nameOf(i));

serveRpc({
  /** Read every file once and drop it: both sides then start from an equally warm page cache. */
  async warm({ dir, count }: { dir: string; count: number }): Promise<void> {
    const list = names(count);
    let next = 0;
    const worker = async () => {
      while (next < list.length) await readFile(path.join(dir, keys.certificate(list[next++]!)));
    };
    await Promise.all(Array.from({ length: 64 }, worker));
  },

  async baseline({ dir, count }: { dir: string; count: number }): Promise<LoadReply> {
    const list = names(count);
    const before = memoryAfterGc();
    const map = new Map<string, unknown>();
    const t0 = performance.now();
    let firstMs = 0;
    let lastMs = 0;
    // A well-written loader: 64 reads in flight (unbounded would run out of file descriptors at 100k).
    let next = 0;
    const worker = async () => {
      while (next < list.length) {
        const i = next++;
        const name = list[i]!;
        map.set(name, JSON.parse(await readFile(path.join(dir, keys.certificate(name)), 'utf8')));
        if (i === 0) firstMs = performance.now() - t0;
        if (i === list.length - 1) lastMs = performance.now() - t0;
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    const allMs = performance.now() - t0;
    baseline = map;
    return { firstMs, lastMs, allMs, before, after: memoryAfterGc() };
  },

  async engine({ dir, count, sample = 1000 }: { dir: string; count: number; sample?: number }): Promise<LoadReply> {
    const list = names(count);
    const before = memoryAfterGc();
    const { createCertEngine } = await engineModule();
    const e = createCertEngine({ storage: fileStorage(dir), issuers: [refusingIssuer('scale')], names: list });
    engine = e;
    const t0 = performance.now();
    const started = e.start().then(() => performance.now() - t0);
    const errors: string[] = [];
    // getCertificate waits for the name's actor to leave `loading`, then serves it (building its SecureContext).
    // - Until start() has created a name's actor the name is refused as unknown: ask again on the next turn.
    // - A handshake gives up after handshakeTimeout (30 s) while its name is still loading: noted, and asked again
    //   (the question is when the name is served).
    // - A name that fails to load (e.g. EMFILE) is answered with its error: that ends the wait.
    const served = async (name: string): Promise<number> => {
      for (;;) {
        try {
          await e.getCertificate(name);
          return performance.now() - t0;
        } catch (error) {
          const kind = (error as Error).name;
          if (performance.now() - t0 < 60 * 60_000 && (kind === 'NameNotAllowedError' || kind === 'HandshakeTimeoutError')) {
            if (kind === 'HandshakeTimeoutError') errors.push(`${name}: ${(error as Error).message} (after ${((performance.now() - t0) / 1000).toFixed(0)} s; asked again)`);
            await new Promise((resolve) => setImmediate(resolve));
            continue;
          }
          errors.push(`${name}: ${(error as Error).message}`);
          return performance.now() - t0;
        }
      }
    };
    // Besides the first and the last name: an evenly spread sample, all asked at once at start
    // (a real server's first minute: handshakes for many names before any of them was read).
    const step = Math.max(1, Math.floor(list.length / Math.max(1, sample)));
    const sampled = list.filter((_, i) => i % step === step - 1).slice(0, sample);
    const [firstMs, lastMs, sampleTimes, allMs] = await Promise.all([
      served(list[0]!),
      served(list[list.length - 1]!),
      Promise.all(sampled.map((name) => served(name))),
      started,
    ]);
    const sorted = [...sampleTimes].sort((a, b) => a - b);
    const sampleMs = sorted.at(-1) ?? 0;
    const pick = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
    const stats = { ...(e as unknown as { stats?: Record<string, number> }).stats };
    const states: Record<string, number> = {};
    for (const s of e.status()) states[s.state] = (states[s.state] ?? 0) + 1;
    const notServing = count - (states.valid ?? 0) - (states.renewing ?? 0);
    const firstFailure = e.status().find((s) => s.state !== 'valid' && s.state !== 'renewing')?.lastError?.message;
    if (firstFailure) errors.push(firstFailure);
    return { firstMs, lastMs, allMs, sampleMs, sample: { count: sampled.length, p50Ms: pick(0.5), p95Ms: pick(0.95) }, stats, before, after: memoryAfterGc(), notServing, states, errors };
  },

  async idle({ seconds }: { seconds: number }): Promise<IdleReply> {
    const windowsCpuMs: number[] = [];
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let w = 0; w < 6; w++) {
      const c0 = process.cpuUsage();
      const w0 = performance.now();
      await new Promise((resolve) => setTimeout(resolve, (seconds / 6) * 1000));
      const c = process.cpuUsage(c0);
      // Per second of wall time actually elapsed: a busy engine stretches the window.
      windowsCpuMs.push(((c.user + c.system) / 1000) * ((seconds / 6) * 1000 / (performance.now() - w0)));
    }
    const cpu = process.cpuUsage(cpu0);
    const elapsedSeconds = (performance.now() - t0) / 1000;
    return { seconds: elapsedSeconds, cpuMs: (cpu.user + cpu.system) / 1000, windowsCpuMs, windowSeconds: seconds / 6 };
  },

  /** Cost of one status listing: `engine.status()`, or for the baseline a plain object per Map entry. */
  status({ calls }: { calls: number }): Summary {
    const times: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      const list = engine ? engine.status() : Array.from(baseline!, ([name, unit]) => ({ name, state: 'valid', unit }));
      times.push(performance.now() - t0);
      if (list.length === 0) throw new Error('status listed nothing');
    }
    return summarize(times);
  },

  async stop(): Promise<void> {
    await engine?.stop();
  },
});

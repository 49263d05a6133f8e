/**
 * Child process for bench:scale: holds either the baseline (the names'
 * files read with plain fs into a Map, or the rows with a plain `pg`
 * loader) or an engine managing every name in file storage or PostgreSQL,
 * so its RSS, heap and CPU are measured alone.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileStorage } from '../../src/adapters/storage/file.js';
import { postgresStorage, type PostgresStorage } from '../../src/adapters/storage/postgres.js';
import type { CertEngine } from '../../src/engine/engine.js';
import { indexEnd, indexHeader, indexLine } from '../../src/engine/startup-index-format.js';
import { readStoredCertificate } from '../../src/engine/stored.js';
import { keys } from '../../src/storage-keys.js';
import { serveRpc } from '../lib/children.js';
import { ariBenchIssuer, engineModule, fileStorageModule, refusingIssuer } from '../lib/engine-module.js';
import { nameOf } from '../lib/dataset.js';
import { memoryAfterGc, type MemoryReading } from '../lib/memory.js';
import { summarize, type Summary } from '../lib/stats.js';
import { indexGeneration, plainPgLoad } from './postgres.js';

/** Where the names are: file storage (`dir`) or a PostgreSQL table (`pg`). */
export interface Where {
  dir: string;
  pg?: { url: string; table: string };
}

export interface LoadReply {
  /** Time until the first name is served (engine) / read (baseline), ms. */
  firstMs: number;
  /** Time until the last name is served / read, ms. */
  lastMs: number;
  /** Time until everything is loaded (`start()` resolved / all files read), ms. */
  allMs: number;
  /**
   * CPU the process used until then (user + system, every thread: libuv's file
   * reads included), ms. Steadier than wall time on a shared machine: another
   * process's burst delays both, but is not counted in either.
   */
  cpuMs: number;
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
  /** Engine only: renewal-information (ARI) requests the engine made until start() resolved. */
  ariRequests?: number;
  /** Engine only: timers the process holds once started (one wake heap: not one per name). */
  timers?: number;
  /**
   * Engine only, with the start-up index: time until the index was written after start-up, ms
   * (the check of every name slept from the index against its file's version is done by then).
   */
  indexWrittenMs?: number;
  /** Engine only: RSS once the index was written (after GC), MB. */
  indexRssMb?: number;
  /**
   * Engine only, with the start-up index: files the check after start-up read (versioned reads
   * from start() until the index's first write: lines it found stale). The write itself then
   * reads the names whose version it does not know (the live actors', read by their own load).
   */
  checkReads?: number;
  /** Engine only, with the start-up index: the highest RSS sampled every 50 ms (no GC) from start() resolved until the index was written, MB. */
  checkPeakRssMb?: number;
}

/** The engine's status calls, each timed (ms): none but `status()` builds an object per name. */
export interface StatusReply {
  /** `status()`: every name, one object each. */
  full: Summary;
  /** `statusPage({ limit: 100 })`: the first page. */
  firstPage: Summary;
  /** `statusPage({ limit: 100, after })` for the last 100 names (every name before the cursor skipped). */
  lastPage: Summary;
  /** Every name through pages of 10,000: total time and pages. */
  pagedWalk: Summary;
  pages: number;
  /** `statusSummary()`: counts by state and the expiry pass. */
  summary: Summary;
  /** `for await (… of statuses())`: every name, yielding to the event loop. */
  asyncWalk: Summary;
}

export interface IdleReply {
  /** Wall time the idle period actually took (longer than asked when the engine is busy). */
  seconds: number;
  cpuMs: number;
  /** CPU per window of `seconds / 6`, ms: the first windows carry V8's post-load GCs, the rest show the steady state. */
  windowsCpuMs: number[];
  windowSeconds: number;
  /** Engine only: ARI requests made during the idle period. */
  ariRequests?: number;
}

/** Renewal-information requests answered so far. */
let ariRequests = 0;



/** CPU time used since `from` (user + system), ms. */
const cpuSince = (from: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(from);
  return (c.user + c.system) / 1000;
};

let engine: CertEngine | undefined;
/** The engine's PostgreSQL storage (closed after the engine stops). */
let storage: PostgresStorage | undefined;
let baseline: Map<string, unknown> | undefined;

const names = (count: number) => Array.from({ length: count }, (_, i) => nameOf(i));

serveRpc({
  /** Read every file once and drop it: both sides then start from an equally warm page cache. */
  async warm({ dir, count, pg }: Where & { count: number }): Promise<void> {
    // PostgreSQL: every row read once (its pages in the server's and the kernel's caches).
    if (pg) return void (await plainPgLoad(pg.url, pg.table, undefined));
    const list = names(count);
    let next = 0;
    const worker = async () => {
      while (next < list.length) await readFile(path.join(dir, keys.certificate(list[next++]!)));
    };
    await Promise.all(Array.from({ length: 64 }, worker));
  },

  /**
   * Write the start-up index for the dataset as an engine would after a start (one versioned read
   * per name, 64 in flight): what a restarted server finds, without a cold engine start first.
   */
  async writeIndex({ dir, count, pg }: Where & { count: number }): Promise<{ ms: number }> {
    const t0 = performance.now();
    const own = pg ? postgresStorage({ connectionString: pg.url, table: pg.table }) : undefined;
    const store = (own ?? fileStorage(dir)).startupIndex!;
    const list = names(count);
    async function* lines(): AsyncGenerator<string[]> {
      yield [indexHeader(Date.now())];
      let written = 0;
      for (let i = 0; i < list.length; i += 4096) {
        const slice = list.slice(i, i + 4096);
        const batch: string[] = new Array(slice.length);
        let next = 0;
        const worker = async () => {
          while (next < slice.length) {
            const j = next++;
            const key = keys.certificate(slice[j]!);
            const read = (await store.loadVersioned(key))!;
            batch[j] = indexLine(slice[j]!, read.version, readStoredCertificate(key, read.value, () => {}).meta);
          }
        };
        await Promise.all(Array.from({ length: 64 }, worker));
        written += batch.length;
        yield batch;
      }
      yield [indexEnd(written)];
    }
    try {
      await store.write(lines());
    } finally {
      await own?.close();
    }
    return { ms: performance.now() - t0 };
  },

  async baseline({ dir, count, pg }: Where & { count: number }): Promise<LoadReply> {
    const list = names(count);
    const before = memoryAfterGc();
    const map = new Map<string, unknown>();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let firstMs = 0;
    let lastMs = 0;
    if (pg) {
      // A plain pg loader: keyset pages of 1,000 rows in key order (the first and the last row's times).
      const rows = await plainPgLoad(pg.url, pg.table, map, (i) => {
        if (i === 0) firstMs = performance.now() - t0;
        lastMs = performance.now() - t0;
      });
      if (rows !== count) throw new Error(`the table holds ${rows} certificates, not ${count}`);
      const allMs = performance.now() - t0;
      const cpuMs = cpuSince(cpu0);
      baseline = map;
      return { firstMs, lastMs, allMs, cpuMs, before, after: memoryAfterGc() };
    }
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
    const cpuMs = cpuSince(cpu0);
    baseline = map;
    return { firstMs, lastMs, allMs, cpuMs, before, after: memoryAfterGc() };
  },

  async engine({ dir, pg, count, sample = 1000, ari = true, index = true }: Where & { count: number; sample?: number; ari?: boolean; index?: boolean }): Promise<LoadReply> {
    const list = names(count);
    const before = memoryAfterGc();
    const { createCertEngine } = await engineModule();
    // The start-up index (file storage's `~index/startup`, PostgreSQL's newest generation): written by the engine once every name slept from it was checked.
    const indexFile = path.join(dir, '~index', 'startup');
    const indexMtime = async () => (pg ? indexGeneration(pg.url, pg.table) : ((await stat(indexFile).catch(() => undefined))?.mtimeMs ?? 0));
    const indexBefore = await indexMtime();
    if (pg) storage = postgresStorage({ connectionString: pg.url, table: pg.table });
    // The check's reads: versioned reads until the index's first write (see LoadReply.checkReads).
    const measured = storage ?? (await fileStorageModule()).fileStorage(dir);
    const store = measured.startupIndex!;
    let versionedReads = 0;
    let checkReads: number | undefined;
    (measured as { startupIndex: typeof store }).startupIndex = {
      ...store,
      loadVersioned: (key) => (versionedReads++, store.loadVersioned(key)),
      write: (lines) => ((checkReads ??= versionedReads), store.write(lines)),
    };
    const e = createCertEngine({
      storage: measured,
      issuers: [ari ? ariBenchIssuer('scale', () => ariRequests++) : refusingIssuer('scale')],
      names: list,
      ...(index ? {} : { startupIndex: false as const }),
    });
    engine = e;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let cpuMs = 0;
    const started = e.start().then(() => {
      cpuMs = cpuSince(cpu0);
      return performance.now() - t0;
    });
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
    const states: Record<string, number> = Object.fromEntries(Object.entries(e.statusSummary({ expiry: false }).byState).filter(([, n]) => n > 0));
    const notServing = count - (states.valid ?? 0) - (states.renewing ?? 0);
    const firstFailure = e.statusPage({ state: ['loading', 'obtaining', 'expired-renewing', 'failed-backoff', 'storage-unreadable'], limit: 1 }).names[0]?.lastError?.message;
    if (firstFailure) errors.push(firstFailure);
    const timers = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const afterStart = memoryAfterGc();
    let indexWrittenMs: number | undefined;
    let indexRssMb: number | undefined;
    let checkPeakRssMb: number | undefined;
    if (index) {
      let peak = process.memoryUsage.rss();
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 50);
      while ((await indexMtime()) <= indexBefore && performance.now() - t0 < 60 * 60_000) await new Promise((resolve) => setTimeout(resolve, 100));
      clearInterval(sampler);
      checkPeakRssMb = Math.max(peak, process.memoryUsage.rss()) / 2 ** 20;
      indexWrittenMs = performance.now() - t0;
      indexRssMb = memoryAfterGc().rssMb;
    }
    return {
      firstMs, lastMs, allMs, cpuMs, sampleMs, sample: { count: sampled.length, p50Ms: pick(0.5), p95Ms: pick(0.95) }, stats,
      before, after: afterStart, notServing, states, errors, ariRequests, timers, indexWrittenMs, indexRssMb, checkReads: checkReads ?? versionedReads, checkPeakRssMb,
    };
  },

  async idle({ seconds }: { seconds: number }): Promise<IdleReply> {
    const windowsCpuMs: number[] = [];
    const ariAtIdle = ariRequests;
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
    return { seconds: elapsedSeconds, cpuMs: (cpu.user + cpu.system) / 1000, windowsCpuMs, windowSeconds: seconds / 6, ...(engine ? { ariRequests: ariRequests - ariAtIdle } : {}) };
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

  /** The engine's status calls, each timed `calls` times. */
  async engineStatus({ calls, count }: { calls: number; count: number }): Promise<StatusReply> {
    const e = engine!;
    const time = async (f: () => unknown): Promise<Summary> => {
      const times: number[] = [];
      for (let i = 0; i < calls; i++) {
        const t0 = performance.now();
        await f();
        times.push(performance.now() - t0);
      }
      return summarize(times);
    };
    // The cursor of the page holding the last 100 names (cursors are the order names were added: 0…count-1).
    const lastCursor = String(count - 101);
    let pages = 0;
    const reply: StatusReply = {
      full: await time(() => e.status().length),
      firstPage: await time(() => e.statusPage({ limit: 100 })),
      lastPage: await time(() => {
        if (e.statusPage({ limit: 100, after: lastCursor }).names.length !== 100) throw new Error('the last page does not hold 100 names');
      }),
      pagedWalk: await time(() => {
        let after: string | undefined;
        let seen = 0;
        pages = 0;
        do {
          const page = e.statusPage({ limit: 10_000, ...(after === undefined ? {} : { after }) });
          seen += page.names.length;
          after = page.next;
          pages++;
        } while (after !== undefined);
        if (seen !== count) throw new Error(`paged walk saw ${seen} names`);
      }),
      pages: 0,
      summary: await time(() => e.statusSummary()),
      asyncWalk: await time(async () => {
        let seen = 0;
        for await (const _ of e.statuses()) seen++;
        if (seen !== count) throw new Error(`async walk saw ${seen} names`);
      }),
    };
    reply.pages = pages;
    return reply;
  },

  async stop(): Promise<void> {
    await engine?.stop();
    await storage?.close();
  },
});

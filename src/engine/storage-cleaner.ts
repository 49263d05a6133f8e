/**
 * Storage that stays bounded on a host whose names come and go: once per
 * interval for the whole cluster (like CertMagic's storage cleaner: 24 h,
 * 14-day grace), one process removes
 * - certificates that expired more than the grace period ago and belong to a
 *   name this process neither manages nor holds (an on-demand name no longer
 *   asked for or allowed), with their failure records;
 * - failure records of such names whose backoff ended more than the grace
 *   period ago (names that never got a certificate);
 * - challenge tokens older than the grace period (debris of crashed attempts);
 * - the backend's own debris, through the optional `Storage.sweep`.
 *
 * Coordination goes through storage: a record of the last run and a lock.
 * Every process checks the record on its own timer (engine clock); the one
 * that finds it due takes the lock, checks again, cleans and writes the
 * record; the others find the lock taken or the record fresh.
 *
 * A certificate is removed under its name's issuance lock and re-read first,
 * so an attempt for that name (in any process) is never undercut. Nothing a
 * handshake could still be served is touched: a name this process manages or
 * holds is skipped, and so is a certificate within its grace period.
 */
import { ConfigError, CorruptStorageError } from '../errors.js';
import { keys, nameFromCertificateKey, nameFromFailureKey } from '../storage-keys.js';
import { safeError } from '../safe-error.js';
import type { Clock, Logger, Storage, SweepResult, TimerHandle } from '../types.js';
import { withStorageLock } from './storage-lock.js';
import { parseFailureRecord, parseStoredCertificate } from './stored.js';

/** The storage cleaner (`createCertEngine({ storageCleaner })`; `false` turns it off). */
export interface StorageCleanerOptions {
  /** How often one process of the cluster cleans, ms. Default 86,400,000 (24 h); at least 60,000. */
  intervalMs?: number;
  /**
   * How long after it expired a certificate of a name no longer managed or
   * allowed is kept, ms. Default 1,209,600,000 (14 days). Failure records,
   * challenge tokens and lock and temp debris older than this go too.
   */
  gracePeriodMs?: number;
}

/** What the cleaner needs from the engine. */
export interface StorageCleanerDeps {
  storage: Storage;
  clock: Clock;
  logger: Logger;
  random: () => number;
  /** Whether `name` must keep its stored state: managed, or held by this process right now. */
  keeps(name: string): boolean;
}

/** What one run removed. */
export interface CleanReport {
  certificates: number;
  failures: number;
  challenges: number;
  /** What `Storage.sweep` removed (absent when the backend has none). */
  debris?: SweepResult;
}

const DAY = 86_400_000;
/** The first check after start (plus up to as much again, so a fleet restarting at once spreads out). */
const FIRST_CHECK_MS = 60_000;
/** The lock stayed taken: another process is cleaning; look at the record again after this long. */
const BUSY_RECHECK_MS = 3_600_000;
const LOCK_TTL_MS = 60_000;
/** Longest real wait for the cleaner's lock before leaving the run to its holder. */
const LOCK_WAIT_MS = 10_000;
/** Longest real wait for a name's issuance lock: an attempt holds it, so that name is left for the next run. */
const NAME_LOCK_WAIT_MS = 2_000;
const RECORD_VERSION = 1;

/** Validate the options (ConfigError) and fill in the defaults. */
export function cleanerSettings(options: StorageCleanerOptions = {}): Required<StorageCleanerOptions> {
  const intervalMs = options.intervalMs ?? DAY;
  const gracePeriodMs = options.gracePeriodMs ?? 14 * DAY;
  if (!Number.isSafeInteger(intervalMs) || intervalMs < 60_000) throw new ConfigError('storageCleaner.intervalMs must be a whole number of ms ≥ 60,000');
  if (!Number.isSafeInteger(gracePeriodMs) || gracePeriodMs < 0) throw new ConfigError('storageCleaner.gracePeriodMs must be a whole number of ms ≥ 0');
  return { intervalMs, gracePeriodMs };
}

/** See the module comment. One per engine: `start()` with it, `stop()` with it. */
export class StorageCleaner {
  readonly #deps: StorageCleanerDeps;
  readonly #settings: Required<StorageCleanerOptions>;
  readonly #stop = new AbortController();
  #timer: TimerHandle | undefined;
  #running: Promise<void> | undefined;

  constructor(deps: StorageCleanerDeps, options: StorageCleanerOptions = {}) {
    this.#deps = deps;
    this.#settings = cleanerSettings(options);
  }

  /** Schedule the first check, a minute or two from now. */
  start(): void {
    this.#schedule(this.#deps.clock.now() + FIRST_CHECK_MS * (1 + this.#deps.random()));
  }

  /** Stop checking; a run in progress stops between two items. */
  async stop(): Promise<void> {
    this.#stop.abort();
    if (this.#timer !== undefined) this.#deps.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** @internal For tests: resolves when no check or run is in progress. */
  async settled(): Promise<void> {
    while (this.#running) await this.#running;
  }

  #schedule(at: number): void {
    if (this.#stop.signal.aborted) return;
    if (this.#timer !== undefined) this.#deps.clock.clearTimeout(this.#timer);
    this.#timer = this.#deps.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#running ??= this.#check().finally(() => {
        this.#running = undefined;
      });
    }, Math.max(0, at - this.#deps.clock.now()));
  }

  /** Run if the cluster's last run is an interval ago; schedule the next check either way. */
  async #check(): Promise<void> {
    const { storage, clock, logger } = this.#deps;
    const { intervalMs } = this.#settings;
    // Up to a minute later than due: processes that would check at the same instant spread out.
    const jitter = () => Math.floor(this.#deps.random() * Math.min(60_000, intervalMs / 10));
    try {
      const last = await this.#lastRun();
      if (last !== undefined && clock.now() < last + intervalMs) return this.#schedule(last + intervalMs + jitter());
      const outcome = await withStorageLock(storage, keys.storageCleanerLock, { clock, logger, lockTtlMs: LOCK_TTL_MS }, { waitMs: LOCK_WAIT_MS, signal: this.#stop.signal }, async (fence) => {
        const latest = await this.#lastRun();
        if (latest !== undefined && clock.now() < latest + intervalMs) return latest;
        const startedAt = clock.now();
        const report = await this.#clean();
        if (this.#stop.signal.aborted) return undefined;
        await storage.store(keys.storageCleanerRecord, JSON.stringify({ version: RECORD_VERSION, lastRunAt: startedAt }), { fence });
        logger.info({ ...report, durationMs: clock.now() - startedAt }, 'storage cleaned');
        return startedAt;
      });
      if (!outcome.ran) return this.#schedule(clock.now() + Math.min(intervalMs, BUSY_RECHECK_MS));
      if (outcome.value !== undefined) this.#schedule(outcome.value + intervalMs + jitter());
    } catch (error) {
      if (this.#stop.signal.aborted) return;
      logger.warn({ err: safeError(error) }, 'storage cleaner: storage unavailable; trying again in an hour');
      this.#schedule(clock.now() + Math.min(intervalMs, BUSY_RECHECK_MS));
    }
  }

  /** The cluster's last run (engine clock of the process that ran it), or undefined (never, or a corrupt record: run). */
  async #lastRun(): Promise<number | undefined> {
    const raw = await this.#deps.storage.load(keys.storageCleanerRecord);
    if (raw === undefined) return undefined;
    try {
      const record = JSON.parse(raw) as { version?: unknown; lastRunAt?: unknown };
      if (record?.version === RECORD_VERSION && typeof record.lastRunAt === 'number' && Number.isFinite(record.lastRunAt)) return record.lastRunAt;
    } catch {
      // fall through
    }
    this.#deps.logger.warn({ key: keys.storageCleanerRecord }, 'storage cleaner: ignoring a corrupt run record');
    return undefined;
  }

  /** One pass over storage. */
  async #clean(): Promise<CleanReport> {
    const { storage, clock } = this.#deps;
    const cutoff = clock.now() - this.#settings.gracePeriodMs;
    const signal = this.#stop.signal;
    const report: CleanReport = { certificates: 0, failures: 0, challenges: 0 };

    for (const key of await storage.list(keys.certificatesPrefix)) {
      if (signal.aborted) return report;
      const name = nameFromCertificateKey(key);
      if (name === undefined || this.#deps.keeps(name)) continue;
      if (await this.#removeIfDead(name, cutoff)) report.certificates++;
    }
    for (const key of await storage.list(keys.failuresPrefix)) {
      if (signal.aborted) return report;
      const name = nameFromFailureKey(key);
      if (name === undefined || this.#deps.keeps(name)) continue;
      if (await this.#removeIfDead(name, cutoff)) report.failures++;
    }
    for (const key of await storage.list(keys.challengesPrefix)) {
      if (signal.aborted) return report;
      const stat = await storage.stat(key);
      if (stat && stat.modified < cutoff) {
        await storage.delete(key);
        report.challenges++;
      }
    }
    if (storage.sweep && !signal.aborted) report.debris = await storage.sweep({ before: cutoff, signal });
    return report;
  }

  /**
   * Remove a name's certificate and failure record if both are past the
   * grace period, under the name's issuance lock (read once without it, so a
   * live name costs no lock, and again under it). False when something is
   * still live, or an attempt holds the lock.
   */
  async #removeIfDead(name: string, cutoff: number): Promise<boolean> {
    const { storage, clock, logger } = this.#deps;
    if (!(await this.#deadSince(name, cutoff, false))) return false;
    const outcome = await withStorageLock(storage, keys.issueLock(name), { clock, logger, lockTtlMs: LOCK_TTL_MS }, { waitMs: NAME_LOCK_WAIT_MS, signal: this.#stop.signal }, async () => {
      if (this.#deps.keeps(name) || !(await this.#deadSince(name, cutoff, true))) return false;
      await storage.delete(keys.certificate(name));
      await storage.delete(keys.failure(name));
      return true;
    });
    return outcome.ran && outcome.value;
  }

  /** Whether nothing stored for `name` has been alive since `cutoff`: no certificate valid then, no backoff running then. */
  async #deadSince(name: string, cutoff: number, underLock: boolean): Promise<boolean> {
    const { storage, logger } = this.#deps;
    try {
      // Bytes the storage cannot decode (not UTF-8) are corrupt like any other bad value.
      const [unitRaw, failureRaw] = await Promise.all([storage.load(keys.certificate(name)), storage.load(keys.failure(name))]);
      if (unitRaw !== undefined && parseStoredCertificate(keys.certificate(name), unitRaw, { checkKey: false }).meta.notAfter >= cutoff) return false;
      if (failureRaw !== undefined) {
        const record = parseFailureRecord(keys.failure(name), failureRaw);
        if (Math.max(record.nextAttemptAt ?? 0, record.lastError?.at ?? 0) >= cutoff) return false;
      }
      return unitRaw !== undefined || failureRaw !== undefined;
    } catch (error) {
      if (!(error instanceof CorruptStorageError)) throw error;
      // A corrupt value counts by its age: debris once it is older than the grace period.
      const keysOf = [keys.certificate(name), keys.failure(name)];
      const stats = await Promise.all(keysOf.map((key) => storage.stat(key)));
      if (stats.some((stat) => stat !== undefined && stat.modified >= cutoff)) return false;
      if (underLock) logger.info({ name }, 'storage cleaner: removing corrupt stored values older than the grace period');
      return true; // a corrupt value is there
    }
  }
}

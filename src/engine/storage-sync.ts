/**
 * Bringing names to life from storage, and keeping them in step with it:
 * the start-up scan (every managed name read once — from the start-up
 * index when storage keeps one, see startup-index.ts, in bulk when storage
 * can, see bulk-scan.ts, else 64 at a time — each then live or asleep as
 * residency decides), the storage watch (a certificate
 * another process stored is adopted at once), and refreshes.
 */
import type { LoadedState } from '../machines/certificate.js';
import { safeError } from '../safe-error.js';
import { keys, nameFromCertificateKey } from '../storage-keys.js';
import { isWatchable, type StorageChange } from '../adapters/storage/notify.js';
import { bulkScan } from './bulk-scan.js';
import type { EngineCore } from './core.js';
import type { Loads } from './loads.js';
import type { NameRecord } from './name-record.js';
import type { Residency } from './residency.js';
import type { StartupIndex } from './startup-index.js';
import type { StateView } from './state-view.js';

/** Storage reads in flight during the start-up scan (the loads' bound: a handshake's read still goes first). */
const SCAN_CONCURRENCY = 64;

export class StorageSync {
  readonly #core: EngineCore;
  readonly #residency: Residency;
  readonly #loads: Loads;
  readonly #view: StateView;
  /** The start-up index (file storage), unless turned off. */
  readonly #index: StartupIndex | undefined;
  #unwatch: (() => Promise<void>) | undefined;

  constructor(core: EngineCore, residency: Residency, loads: Loads, view: StateView, index?: StartupIndex) {
    this.#core = core;
    this.#residency = residency;
    this.#loads = loads;
    this.#view = view;
    this.#index = index;
  }

  /**
   * Bring names to life once: read each (64 at a time) and let residency
   * make it live or asleep. Names a handshake or an operator woke meanwhile
   * are left to their actor. Resolves once every name has left `loading`
   * (or the engine stopped).
   */
  async scan(records: NameRecord[]): Promise<void> {
    // Failure records are rare: list them once rather than look for one per name
    // (half the reads of a 100,000-name start). The listing only decides for names that
    // may sleep; a name that will attempt reads its own record, so one written by another
    // process since the listing still holds.
    const many = records.length > this.#core.settings.maxLiveActors;
    const failures = many ? await this.#loads.listFailures() : undefined;
    // Many names: first the start-up index (one read, file storage: names slept on it are checked
    // against their files after start-up), then a storage that reads in bulk reads the others in one
    // listing/query/scan; what neither found is read name by name.
    const index = many ? this.#index : undefined;
    const unindexed = index ? await index.apply(records, failures) : records;
    const rest = many ? await bulkScan(this.#core, this.#residency, this.#loads, unindexed, failures) : records;
    let next = 0;
    const worker = async () => {
      while (next < rest.length && !this.#core.stopped) {
        const record = rest[next++]!;
        if (record.actor || record.sleeping) continue;
        const skipFailure = failures !== undefined && !failures.has(keys.failure(record.name));
        let loaded: LoadedState | { readError: unknown };
        try {
          loaded = await this.#loads.read(record.name, { mode: 'background', skipFailure });
        } catch (readError) {
          loaded = { readError }; // the actor's load fails with it: storage-unreadable, and the chart's retry
        }
        if (this.#core.stopped || this.#residency.get(record.name) !== record || record.actor || record.sleeping) continue;
        this.#residency.restOrWake(record, loaded, skipFailure);
      }
    };
    await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, worker));
    await Promise.all(records.map((record) => this.#view.untilRead(record)));
    // Every name is served: the index's lines are checked and it is written, in the background.
    if (index && !this.#core.stopped) index.afterStartup();
  }

  /** `stop()`: the start-up index written once more if names changed (taken before the engine lets its names go). */
  beforeStop(): Promise<void> {
    return this.#index?.stop() ?? Promise.resolve();
  }

  /**
   * Shared storages that announce writes (Redis pub/sub, PostgreSQL NOTIFY)
   * let a certificate renewed by another process be served here at once,
   * with no order of our own (the chart's STORAGE_CHANGED). A watch that
   * connects after `stop()` began is closed at once.
   */
  watch(): Promise<void> {
    return this.#core.track(this.#connect());
  }

  async #connect(): Promise<void> {
    const storage = this.#core.storage;
    if (!isWatchable(storage)) return;
    try {
      const unwatch = await storage.watch(keys.certificatesPrefix, (change) => this.#onChange(change));
      if (this.#core.stopped) await unwatch();
      else this.#unwatch = unwatch;
    } catch (error) {
      this.#core.logger.warn({ err: safeError(error) }, 'cannot watch storage for changes; renewals by other processes are picked up at our own renewal time');
    }
  }

  async unwatch(): Promise<void> {
    const unwatch = this.#unwatch;
    this.#unwatch = undefined;
    await unwatch?.().catch((error: unknown) => this.#core.logger.warn({ err: safeError(error) }, 'unwatch failed'));
  }

  /**
   * Re-read a name's stored certificate and hand the chart one another
   * process stored (STORAGE_CHANGED; no order is placed). The read does not
   * evict key material handshakes use, and an unchanged certificate is left
   * alone. Resolves `true` when the stored certificate is now served.
   */
  async refresh(record: NameRecord): Promise<boolean> {
    // A name not read yet reads storage when it is: nothing to refresh.
    if (!record.actor && !record.sleeping) return false;
    const { certificate } = await this.#loads.read(record.name, { mode: 'background' });
    if (!certificate || certificate.fingerprint === record.certificate?.fingerprint) return false;
    this.#residency.sendOrAsk(record, { type: 'STORAGE_CHANGED', certificate });
    await this.#view.untilRead(record);
    return record.certificate?.fingerprint === certificate.fingerprint;
  }

  #onChange(change: StorageChange): void {
    if (this.#core.stopped) return;
    // After the change feed was down (reconnected), anything may have changed: re-read every name we hold.
    if (change.type === 'resync') this.#core.logger.info({ names: this.#residency.size }, 'storage change feed reconnected: re-reading the stored certificates');
    const records = change.type === 'resync' ? [...this.#residency.records()] : [this.#residency.get(nameFromCertificateKey(change.key) ?? '')];
    for (const record of records) {
      // Our own writes come back too: `refresh` ignores an unchanged certificate.
      if (record && change.type !== 'delete') {
        this.refresh(record).catch((error: unknown) => {
          if (!this.#core.stopped) this.#core.logger.warn({ name: record.name, err: safeError(error) }, 'refresh from storage failed');
        });
      }
    }
  }
}

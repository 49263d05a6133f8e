/**
 * Certificates that were issued but could not be stored (the storage failed
 * longer than the attempt could wait). An issued certificate is never thrown
 * away: the engine serves it from memory, and this module stores it later,
 * retrying until it lands — under the name's issuance lock, fenced, and only
 * if storage does not meanwhile hold a newer certificate for the name (one a
 * process stored since must not be overwritten by ours).
 */
import { CorruptStorageError } from '../errors.js';
import { parseStoredCertificate } from './stored.js';
import { keys } from '../storage-keys.js';
import { safeError } from '../safe-error.js';
import type { CertificateMeta, Clock, Logger, Storage, TimerHandle } from '../types.js';

export interface PendingStoresOptions {
  storage: Storage;
  clock: Clock;
  logger: Logger;
  lockTtlMs: number;
  /** Pause between two tries (jittered ±20 %). */
  retryMs: number;
  /** Told when a pending certificate was stored, or dropped because storage holds a newer one. */
  onSettled?: (name: string, outcome: 'stored' | 'superseded') => void;
}

interface Pending {
  unit: string;
  meta: CertificateMeta;
  timer?: TimerHandle;
}

export class PendingStores {
  readonly #options: PendingStoresOptions;
  readonly #pending = new Map<string, Pending>();
  #stopped = false;

  constructor(options: PendingStoresOptions) {
    this.#options = options;
  }

  /** Names whose certificate waits to be stored. */
  get size(): number {
    return this.#pending.size;
  }

  /** Store `unit` (the serialised certificate `meta`) for `name` later; replaces an older pending one. */
  add(name: string, unit: string, meta: CertificateMeta): void {
    if (this.#stopped) return;
    const previous = this.#pending.get(name);
    if (previous?.timer !== undefined) this.#options.clock.clearTimeout(previous.timer);
    const entry: Pending = { unit, meta };
    this.#pending.set(name, entry);
    this.#schedule(name, entry);
  }

  /** Stop retrying (pending certificates are given up: they are still served until the process ends). */
  stop(): void {
    this.#stopped = true;
    for (const entry of this.#pending.values()) if (entry.timer !== undefined) this.#options.clock.clearTimeout(entry.timer);
    this.#pending.clear();
  }

  #schedule(name: string, entry: Pending): void {
    const { clock, retryMs } = this.#options;
    entry.timer = clock.setTimeout(() => {
      entry.timer = undefined;
      this.#flush(name, entry).then(
        (outcome) => {
          if (this.#pending.get(name) !== entry) return;
          this.#pending.delete(name);
          this.#options.onSettled?.(name, outcome);
        },
        (error: unknown) => {
          if (this.#stopped || this.#pending.get(name) !== entry) return;
          this.#options.logger.warn({ name, err: safeError(error) }, 'storing an issued certificate failed again; retrying');
          this.#schedule(name, entry);
        },
      );
    }, Math.round(retryMs * (0.8 + 0.4 * Math.random())));
  }

  async #flush(name: string, entry: Pending): Promise<'stored' | 'superseded'> {
    const { storage, lockTtlMs } = this.#options;
    const lockKey = keys.issueLock(name);
    const lock = await storage.lock(lockKey, lockTtlMs, { signal: AbortSignal.timeout(lockTtlMs) });
    try {
      const key = keys.certificate(name);
      // Bytes the storage cannot decode (not UTF-8) are corrupt too: ours replaces them.
      const raw = await storage.load(key).catch((error: unknown) => {
        if (error instanceof CorruptStorageError) return undefined;
        throw error;
      });
      if (raw !== undefined) {
        let stored: CertificateMeta | undefined;
        try {
          stored = parseStoredCertificate(key, raw, { checkKey: false }).meta;
        } catch {
          stored = undefined; // corrupt: ours replaces it
        }
        if (stored?.fingerprint === entry.meta.fingerprint) return 'stored';
        if (stored && stored.notBefore >= entry.meta.notBefore) return 'superseded';
      }
      await storage.store(key, entry.unit, { fence: { lockKey, token: lock.fencingToken } });
      return 'stored';
    } finally {
      await lock.release().catch(() => {});
    }
  }
}

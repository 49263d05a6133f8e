/**
 * What every part of the engine shares: its validated settings, the clock,
 * logger, storage and issuers, the public event bus, and its lifetime — one
 * abort signal for everything it started, and the set of effects in flight
 * that `stop()` waits for.
 */
import { EventEmitter, setMaxListeners } from 'node:events';
import { realClock } from '../clock.js';
import { ConfigError } from '../errors.js';
import { silentLogger } from '../silent-logger.js';
import { checkEngineOptions } from './config.js';
import { CorruptValues } from './corrupt-values.js';
import { PendingStores } from './pending-store.js';
import { StorageClock } from './storage-clock.js';
import { defaultTimingPolicy, type TimingPolicy } from '../machines/policy.js';
import { DEFAULT_DATA_DIR, fileStorage } from '../adapters/storage/file.js';
import { safeError, withSafeErrors } from '../safe-error.js';
import type { Clock, Issuer, Logger, Storage } from '../types.js';
import type { CertEngineEvent, CertEngineEventOf, CertEngineEventType } from './events.js';
import type { CertEngineOptions } from './options.js';

/** The engine's numeric settings, validated once (defaults documented on `CertEngineOptions`). */
export interface EngineSettings {
  handshakeTimeout: number;
  operatorTimeout: number;
  attemptTimeout: number;
  maxWaitersPerName: number;
  maxWaiters: number;
  lockTtlMs: number;
  stopTimeoutMs: number;
  cacheCapacity: number;
  maxLiveActors: number;
  serveExpired: boolean;
}

export class EngineCore {
  readonly storage: Storage;
  readonly issuers: readonly Issuer[];
  readonly clock: Clock;
  readonly logger: Logger;
  readonly policy: TimingPolicy;
  readonly random: () => number;
  readonly settings: EngineSettings;
  /** The storage's clock, for times shared through storage (failure records' backoff). */
  readonly storageClock: StorageClock;
  /** Issued certificates the storage refused for too long: stored later, under the lock (attempt.ts). */
  readonly pending: PendingStores;
  /** Stored values that cannot be used: counted as absent, each reported once. */
  readonly corrupt: CorruptValues;
  readonly #lifetime = new AbortController();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #events = new EventEmitter();

  constructor(options: CertEngineOptions) {
    checkEngineOptions(options);
    // Every queued read and attempt, and every request in flight, listens for the engine's end: thousands at once is normal.
    setMaxListeners(0, this.#lifetime.signal);
    this.storage = options.storage ?? fileStorage(DEFAULT_DATA_DIR);
    this.issuers = [...options.issuers];
    this.clock = options.clock ?? realClock();
    this.logger = withSafeErrors(options.logger ?? silentLogger());
    this.corrupt = new CorruptValues(this.logger);
    this.policy = { ...defaultTimingPolicy, ...options.timing };
    this.random = options.random ?? Math.random;
    this.settings = {
      handshakeTimeout: positive(options.handshakeTimeout, 30_000, 'handshakeTimeout'),
      operatorTimeout: positive(options.operatorTimeout, 5 * 60_000, 'operatorTimeout'),
      attemptTimeout: positive(options.attemptTimeout, 10 * 60_000, 'attemptTimeout'),
      maxWaitersPerName: positive(options.maxWaitersPerName, 10_000, 'maxWaitersPerName'),
      maxWaiters: positive(options.maxWaiters, 100_000, 'maxWaiters'),
      lockTtlMs: positive(options.lockTtlMs, 60_000, 'lockTtlMs'),
      stopTimeoutMs: positive(options.stopTimeoutMs, 10_000, 'stopTimeoutMs'),
      cacheCapacity: count(options.cacheCapacity, 10_000, 'cacheCapacity'),
      maxLiveActors: count(options.maxLiveActors, 1_000, 'maxLiveActors', 0),
      serveExpired: options.serveExpired ?? false,
    };
    // An injected clock (tests, simulations) is the only clock: there is no storage clock to relate it to.
    this.storageClock = new StorageClock(options.clock ? undefined : this.storage, this.clock);
    this.pending = new PendingStores({
      storage: this.storage,
      clock: this.clock,
      logger: this.logger,
      lockTtlMs: this.settings.lockTtlMs,
      retryMs: this.policy.storageRetryMs,
    });
  }

  /** Aborted when the engine stops: ARI and `ask` requests, queued loads and attempts see it. */
  get signal(): AbortSignal {
    return this.#lifetime.signal;
  }

  get stopped(): boolean {
    return this.#lifetime.signal.aborted;
  }

  /** The engine stops: everything watching `signal` gives up. */
  abort(reason: Error): void {
    this.#lifetime.abort(reason);
  }

  /** Remember an effect in flight so `stop()` can wait for it. */
  track<T>(promise: Promise<T>): Promise<T> {
    this.#inflight.add(promise);
    const forget = () => this.#inflight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  /**
   * Wait for the effects in flight (storage calls cannot be aborted), at most
   * `stopTimeoutMs` of real time; true when they all settled.
   */
  async settle(): Promise<boolean> {
    let grace: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      Promise.allSettled([...this.#inflight]).then(() => true),
      new Promise<boolean>((resolve) => (grace = setTimeout(resolve, this.settings.stopTimeoutMs, false))),
    ]);
    clearTimeout(grace);
    if (!settled) this.logger.warn({ pending: this.#inflight.size }, 'stop: storage or issuer calls still pending after the grace period');
    return settled;
  }

  /** Subscribe to an engine event. Returns an unsubscribe function. */
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void {
    this.#events.on(type, listener);
    return () => this.#events.off(type, listener);
  }

  /** Whether anyone listens for `type` (events that cost something to build are only built then). */
  listens(type: CertEngineEventType): boolean {
    return this.#events.listenerCount(type) > 0;
  }

  /** Publish an engine event. A listener's bug must not break the lifecycle of a certificate: its throw is logged. */
  publish(event: CertEngineEvent): void {
    try {
      this.#events.emit(event.type, event);
    } catch (error) {
      this.logger.error({ err: safeError(error), event: event.type }, 'event listener threw');
    }
  }

  /** Drop every listener (after stop). */
  removeListeners(): void {
    this.#events.removeAllListeners();
  }

  /**
   * Run a timer's or a wake's callback so that nothing it throws leaves the
   * engine: a throw is logged and the caller goes on with the next one.
   */
  guard(what: string, fn: () => void, fields: Record<string, unknown> = {}): void {
    try {
      fn();
    } catch (error) {
      this.logger.error({ ...fields, err: safeError(error) }, `${what} failed`);
    }
  }
}

function count(value: number | undefined, fallback: number, what: string, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) throw new ConfigError(`${what} must be a whole number ≥ ${min}`);
  return value;
}

/** A positive number of ms (or `fallback` when unset); `ConfigError` otherwise. */
export function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new ConfigError(`${what} must be a positive number of ms`);
  return value;
}

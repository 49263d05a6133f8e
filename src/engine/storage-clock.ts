/**
 * The storage's clock, as seen from this process: the offset between the
 * storage's `now()` (Redis TIME, PostgreSQL's clock, the filesystem's
 * timestamps) and the engine's clock. Times shared through storage (a failure
 * record's backoff) are written with the writer's offset and read back with
 * the reader's, so two processes whose clocks disagree still agree on when a
 * shared backoff ends: it is judged on the storage's one clock.
 */
import type { Clock, Storage } from '../types.js';

/** Re-measure the offset at most this often. */
const REFRESH_MS = 30_000;

export class StorageClock {
  readonly #storage: Storage | undefined;
  readonly #clock: Clock;
  #offset = 0;
  #measuredAt = -Infinity;
  #measuring: Promise<number> | undefined;

  /**
   * `storage` undefined: no storage clock (times are taken on `clock` as they
   * are). The engine passes none when it was given its own clock: a simulated
   * clock has no relation to the storage's.
   */
  constructor(storage: Storage | undefined, clock: Clock) {
    this.#storage = storage;
    this.#clock = clock;
  }

  /**
   * Storage time minus local time, in ms (0 when the storage has no clock, or
   * it cannot be read: then both sides fall back to their own clocks, as before).
   */
  offset(): Promise<number> {
    if (!this.#storage?.now) return Promise.resolve(0);
    if (this.#clock.now() - this.#measuredAt < REFRESH_MS) return Promise.resolve(this.#offset);
    this.#measuring ??= this.#measure().finally(() => {
      this.#measuring = undefined;
    });
    return this.#measuring;
  }

  async #measure(): Promise<number> {
    const sent = this.#clock.now();
    try {
      const storageNow = await this.#storage!.now!();
      const received = this.#clock.now();
      // The storage read its clock somewhere in the round trip: take the middle.
      this.#offset = Math.round(storageNow - (sent + received) / 2);
      this.#measuredAt = received;
    } catch {
      // Keep the last known offset; the next call tries again.
    }
    return this.#offset;
  }
}

/**
 * At most `max` tasks at once; the rest wait in FIFO order, except urgent
 * ones, which go to the front. Bounds storage reads (a file per name would
 * otherwise exhaust file descriptors with 100k names) without letting a
 * handshake's read queue behind a background scan.
 *
 * A task may also carry a lower `limit`: it starts only while fewer than
 * `limit` tasks run, so the slots above it stay reserved for the others
 * (attempts for new on-demand names can never take the slots renewals need).
 *
 * A waiting task whose signal aborts (the engine stopped) leaves the queue
 * and rejects with the signal's reason: it never starts.
 */
interface Waiting {
  start(): void;
  limit: number;
}

export class Limiter {
  readonly #max: number;
  #running = 0;
  readonly #queue: Waiting[] = [];

  constructor(max: number) {
    this.#max = max;
  }

  /** Run `task` when a slot is free (below `limit`, default `max`); `urgent` tasks are queued ahead of the others. */
  async run<T>(task: () => Promise<T>, options: { urgent?: boolean; signal?: AbortSignal; limit?: number } = {}): Promise<T> {
    const { urgent = false, signal } = options;
    const limit = Math.min(this.#max, options.limit ?? this.#max);
    signal?.throwIfAborted();
    if (this.#running >= limit) await this.#slot(urgent, limit, signal);
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#next();
    }
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Tasks running. */
  get running(): number {
    return this.#running;
  }

  /** Start the first waiting task allowed to run now. */
  #next(): void {
    const at = this.#queue.findIndex((w) => w.limit > this.#running);
    if (at >= 0) this.#queue.splice(at, 1)[0]!.start();
  }

  #slot(urgent: boolean, limit: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiting: Waiting = {
        limit,
        start: () => {
          signal?.removeEventListener('abort', leave);
          resolve();
        },
      };
      const leave = () => {
        const at = this.#queue.indexOf(waiting);
        if (at >= 0) this.#queue.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', leave, { once: true });
      if (urgent) this.#queue.unshift(waiting);
      else this.#queue.push(waiting);
    });
  }
}

/**
 * At most `max` tasks at once; the rest wait in FIFO order, except urgent
 * ones, which go to the front. Bounds storage reads (a file per name would
 * otherwise exhaust file descriptors with 100k names) without letting a
 * handshake's read queue behind a background scan.
 *
 * A waiting task whose signal aborts (the engine stopped) leaves the queue
 * and rejects with the signal's reason: it never starts.
 */
export class Limiter {
  readonly #max: number;
  #running = 0;
  readonly #queue: Array<() => void> = [];

  constructor(max: number) {
    this.#max = max;
  }

  /** Run `task` when a slot is free; `urgent` tasks are queued ahead of the others. */
  async run<T>(task: () => Promise<T>, options: { urgent?: boolean; signal?: AbortSignal } = {}): Promise<T> {
    const { urgent = false, signal } = options;
    signal?.throwIfAborted();
    if (this.#running >= this.#max) await this.#slot(urgent, signal);
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#queue.shift()?.();
    }
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  #slot(urgent: boolean, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const start = () => {
        signal?.removeEventListener('abort', leave);
        resolve();
      };
      const leave = () => {
        const at = this.#queue.indexOf(start);
        if (at >= 0) this.#queue.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', leave, { once: true });
      if (urgent) this.#queue.unshift(start);
      else this.#queue.push(start);
    });
  }
}

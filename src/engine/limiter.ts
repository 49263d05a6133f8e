/**
 * At most `max` tasks at once; the rest wait in FIFO order, except urgent
 * ones, which go to the front. Bounds storage reads (a file per name would
 * otherwise exhaust file descriptors with 100k names) without letting a
 * handshake's read queue behind a background scan.
 */
export class Limiter {
  readonly #max: number;
  #running = 0;
  readonly #queue: Array<() => void> = [];

  constructor(max: number) {
    this.#max = max;
  }

  /** Run `task` when a slot is free; `urgent` tasks are queued ahead of the others. */
  async run<T>(task: () => Promise<T>, urgent = false): Promise<T> {
    if (this.#running >= this.#max) {
      await new Promise<void>((resolve) => (urgent ? this.#queue.unshift(resolve) : this.#queue.push(resolve)));
    }
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
}

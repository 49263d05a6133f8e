/**
 * At most `max` tasks at once; the rest wait in FIFO order. Used to bound
 * storage reads at start-up (a file per name would otherwise exhaust file
 * descriptors with 100k names).
 */
export class Limiter {
  readonly #max: number;
  #running = 0;
  readonly #queue: Array<() => void> = [];

  constructor(max: number) {
    this.#max = max;
  }

  /** Run `task` when a slot is free. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#max) await new Promise<void>((resolve) => this.#queue.push(resolve));
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#queue.shift()?.();
    }
  }
}

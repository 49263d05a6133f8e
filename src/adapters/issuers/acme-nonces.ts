/**
 * Replay nonces (RFC 8555 §7.2) kept across the attempts of one issuer.
 *
 * Every answer of the CA carries a fresh `Replay-Nonce`; the next signed
 * request uses one of them instead of asking `newNonce` first. Kept per
 * issuer (one CA) rather than per attempt, so an attempt does not start with
 * a `HEAD newNonce`: one round trip less before the order, for every
 * on-demand name. A nonce is a CA's, not an account's (§7.2), so any attempt
 * may use any of them.
 *
 * A CA forgets nonces after a while: those older than `maxAgeMs` are dropped
 * rather than used, and one the CA refuses anyway (`badNonce`) costs what the
 * `HEAD` would have (acme-client retries with the nonce of the error answer).
 */

/** Settings of a `NoncePool`. */
export interface NoncePoolOptions {
  /** Nonces older than this are not used, ms. */
  maxAgeMs: number;
  /** Most nonces kept (the oldest go first). */
  max: number;
  /** Clock, ms (wall time: the CA's nonce lifetime is real time). */
  now?: () => number;
}

/** Default nonce lifetime here: well within what CAs keep (Boulder keeps nonces for minutes). */
export const NONCE_MAX_AGE_MS = 30_000;
/** Default bound: a burst of concurrent attempts leaves about this many behind. */
export const NONCE_POOL_MAX = 32;

/** Nonces from the CA's answers, newest used first. */
export class NoncePool {
  readonly #nonces: { nonce: string; at: number }[] = [];
  readonly #maxAgeMs: number;
  readonly #max: number;
  readonly #now: () => number;

  constructor(options: NoncePoolOptions = { maxAgeMs: NONCE_MAX_AGE_MS, max: NONCE_POOL_MAX }) {
    this.#maxAgeMs = options.maxAgeMs;
    this.#max = options.max;
    this.#now = options.now ?? Date.now;
  }

  /** Keep a nonce from an answer. */
  put(nonce: string): void {
    this.#nonces.push({ nonce, at: this.#now() });
    if (this.#nonces.length > this.#max) this.#nonces.shift();
  }

  /** The newest nonce still young enough, or undefined (then ask `newNonce`). */
  take(): string | undefined {
    const entry = this.#nonces.pop();
    if (entry === undefined) return undefined;
    // Newest first: once one is too old, every one before it is too.
    if (entry.at < this.#now() - this.#maxAgeMs) {
      this.#nonces.length = 0;
      return undefined;
    }
    return entry.nonce;
  }

  /** Nonces held (for tests). */
  get size(): number {
    return this.#nonces.length;
  }
}

/**
 * A token bucket with lazy refill: tokens are recomputed from elapsed time
 * whenever the bucket is read, so it costs O(1) per call and no timers
 * (an idle engine stays idle).
 */
import { ConfigError } from '../errors.js';

// Float refill (e.g. 1/36 per second) can land a hair under 1 exactly when a token is due.
const EPSILON = 1e-9;

/** Options of `TokenBucket`. */
export interface TokenBucketOptions {
  /** Capacity: how many tokens can be taken at once after a quiet period (≥ 1). The bucket starts full. */
  burst: number;
  /** Tokens added per second, continuously (≥ 0; 0 means the burst is all there will ever be). */
  refillPerSecond: number;
  /** Clock, ms since epoch. Default `Date.now`. */
  now?: () => number;
}

/** A token bucket rate limiter. */
export class TokenBucket {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #now: () => number;
  #tokens: number;
  #updatedAt: number;

  constructor(options: TokenBucketOptions) {
    const { burst, refillPerSecond } = options;
    if (!Number.isFinite(burst) || burst < 1) throw new ConfigError(`token bucket burst must be a number ≥ 1, got ${burst}`);
    if (!Number.isFinite(refillPerSecond) || refillPerSecond < 0) {
      throw new ConfigError(`token bucket refillPerSecond must be a finite number ≥ 0, got ${refillPerSecond}`);
    }
    this.#burst = burst;
    this.#perMs = refillPerSecond / 1000;
    this.#now = options.now ?? Date.now;
    this.#tokens = burst;
    this.#updatedAt = this.#now();
  }

  /** Take one token if there is one; `false` (and nothing taken) otherwise. */
  tryTake(): boolean {
    this.#refill();
    if (this.#tokens < 1 - EPSILON) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Give back a token taken for something that did not happen after all (never beyond the burst). */
  giveBack(): void {
    this.#refill();
    this.#tokens = Math.min(this.#burst, this.#tokens + 1);
  }

  /** Whole tokens available now. */
  available(): number {
    this.#refill();
    return Math.floor(this.#tokens + EPSILON);
  }

  /** When the next token can be taken, ms since epoch: now if one is available, `Infinity` if none will ever come. */
  nextTokenAt(): number {
    this.#refill();
    if (this.#tokens >= 1 - EPSILON) return this.#updatedAt;
    if (this.#perMs === 0) return Infinity;
    return this.#updatedAt + Math.ceil((1 - EPSILON - this.#tokens) / this.#perMs);
  }

  #refill(): void {
    const now = this.#now();
    // A clock that steps backwards adds nothing (and never takes tokens away).
    if (now > this.#updatedAt) {
      this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#updatedAt) * this.#perMs);
    }
    this.#updatedAt = Math.max(this.#updatedAt, now);
  }
}

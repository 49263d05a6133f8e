/**
 * Keeping an issuance lock's lease while an attempt runs.
 *
 * The lease is renewed every third of its TTL. A renewal that fails for a
 * passing reason (a storage blip, a reset connection, a timeout) is retried
 * at once and then every few hundred ms, each try bounded by what is left of
 * the lease, so one bad moment does not cost the lease. The lease is given up
 * — `signal` aborts with `LockLostError` — when the storage says it is someone
 * else's, or when it was not renewed before a margin ahead of its end (from
 * then on another process may take over, so this one must stop ordering and
 * writing before it can).
 */
import { LockLostError } from '../errors.js';
import { safeError } from '../safe-error.js';
import type { Clock, Logger, StorageLock, TimerHandle } from '../types.js';

/** A lease being kept. */
export interface Lease {
  /** Aborts when the lease is lost (reason: `LockLostError`) or the attempt's own signal aborts (its reason). */
  readonly signal: AbortSignal;
  /** Whether the lease was lost (not merely the attempt aborted). */
  readonly lost: boolean;
  /** Throw unless the lease is still held: call before ordering and before writing. */
  assertHeld(): void;
  /** Stop renewing (idempotent). */
  stop(): void;
}

export interface LeaseOptions {
  ttlMs: number;
  clock: Clock;
  logger: Logger;
  /** The attempt's own signal (engine stop). */
  signal: AbortSignal;
}

/** Pause between retries of a failed renewal. */
function retryPause(ttlMs: number): number {
  return Math.max(20, Math.min(500, Math.floor(ttlMs / 20)));
}

/**
 * Elapsed time is measured on the monotonic clock: a wall clock stepped
 * forward (NTP, a VM resume) is not a lost lease, while a process frozen by
 * SIGSTOP or a GC pause does see the real time its lease ran for.
 */
const elapsed = { now: () => performance.now() };

/** Keep `lock`'s lease from now (it was just taken) until `stop()`. Timers run on `options.clock`. */
export function keepLease(lock: StorageLock, options: LeaseOptions): Lease {
  const { ttlMs, logger } = options;
  const timers = options.clock;
  const clock = { now: elapsed.now, setTimeout: timers.setTimeout.bind(timers), clearTimeout: timers.clearTimeout.bind(timers) };
  const controller = new AbortController();
  // Give up this long before the lease ends: a renewal in flight then cannot matter any more.
  const margin = Math.max(10, Math.floor(ttlMs / 10));
  /** When the lease started, as last renewed: the time the successful renewal was *sent* (the storage counts from later). */
  let renewedAt = clock.now();
  let timer: TimerHandle | undefined;
  let renewing = false;
  let stopped = false;
  let lost = false;

  const onAbort = () => {
    if (!controller.signal.aborted) controller.abort(options.signal.reason);
  };
  options.signal.addEventListener('abort', onAbort, { once: true });
  if (options.signal.aborted) onAbort();

  const lose = (why: unknown) => {
    if (stopped || controller.signal.aborted) return;
    lost = true;
    logger.warn({ lock: lock.key, err: safeError(why) }, 'issuance lock lost: the attempt stops before ordering or writing again');
    controller.abort(why instanceof LockLostError ? why : new LockLostError(lock.key));
    stop();
  };

  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = clock.setTimeout(tick, Math.max(0, delayMs));
  };

  function tick(): void {
    timer = undefined;
    if (stopped || controller.signal.aborted || renewing) return;
    const endsAt = renewedAt + ttlMs - margin;
    const left = endsAt - clock.now();
    if (left <= 0) return lose(new LockLostError(lock.key));
    const sentAt = clock.now();
    renewing = true;
    // Bounded by what is left of the lease: a renewal that answers later is worth nothing.
    let deadline: TimerHandle | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      deadline = clock.setTimeout(() => reject(new Error(`lease renewal got no answer within ${left} ms`)), left);
    });
    Promise.race([lock.renew(), timedOut]).then(
      () => {
        renewing = false;
        if (deadline !== undefined) clock.clearTimeout(deadline);
        renewedAt = sentAt;
        schedule(Math.max(50, Math.floor(ttlMs / 3)));
      },
      (error: unknown) => {
        renewing = false;
        if (deadline !== undefined) clock.clearTimeout(deadline);
        if (error instanceof LockLostError) return lose(error);
        const remaining = renewedAt + ttlMs - margin - clock.now();
        if (remaining <= 0) return lose(error);
        logger.warn({ lock: lock.key, err: safeError(error), leftMs: remaining }, 'lock lease renewal failed; retrying within the lease');
        schedule(Math.min(retryPause(ttlMs), remaining));
      },
    );
  }

  function stop(): void {
    if (stopped) return;
    stopped = true;
    options.signal.removeEventListener('abort', onAbort);
    if (timer !== undefined) clock.clearTimeout(timer);
  }

  schedule(Math.max(50, Math.floor(ttlMs / 3)));
  return {
    signal: controller.signal,
    get lost() {
      return lost;
    },
    assertHeld() {
      if (controller.signal.aborted) throw controller.signal.reason;
      // The timer may not have fired yet (a stalled event loop): judge the lease by the clock too.
      if (clock.now() >= renewedAt + ttlMs - margin) {
        lose(new LockLostError(lock.key));
        throw controller.signal.reason;
      }
    },
    stop,
  };
}

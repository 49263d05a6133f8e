/**
 * One issuance attempt for one name — the body of the statechart's
 * `attempting` state. It runs at most once per name at a time in a process
 * (the statechart) and across processes (the storage lock):
 *
 *   permission and budget (on-demand names; nothing stored or locked if refused)
 *   → take the lock → re-read storage (another process may have just finished)
 *   → try each issuer in order → store the unit with the lock's fencing token.
 *
 * Under faults (see docs/clusters.md):
 * - the lease is kept by lease.ts: a renewal that fails once is retried within
 *   the lease; a lease truly lost aborts the attempt (the issuer's signal
 *   fires) before it can order or write again;
 * - fenced is not failed: a holder whose lease or write was taken over adopts
 *   what the new holder stores, waiting for it within a bound, and records no
 *   failure;
 * - an issued certificate is never thrown away by a storage error: the store
 *   is retried with the same certificate (idempotent by fingerprint) while
 *   the lease holds, and one that still could not be stored is served from
 *   memory and stored later (pending-store.ts).
 *
 * It never touches machine state: it returns metadata (the key goes to the
 * material cache) or throws the attempt's error.
 *
 * Why a little over 400 lines: it is one sequence read top to bottom (the
 * steps above and their fault paths share the lock, the lease and the fence);
 * what stands apart already lives beside it (the floor's bookkeeping in
 * attempt-floor.ts, the lease in lease.ts, late stores in pending-store.ts).
 */
import { certificateCoversName, parseCertificateBundle } from '../certs.js';
import {
  AllIssuersFailedError,
  CertstateError,
  FencingError,
  IssuanceFloorError,
  IssuerOnHoldError,
  LockLostError,
  isStorageFault,
  toErrorInfo,
} from '../errors.js';
import { floorUntil, ordersPlacedBy, recentOrders, whyUnusable, withOrders, withOrdersPlaced } from '../machines/floor.js';
import { assertUsable, clusterOrders, noteOrder, settleFailureRecord } from './attempt-floor.js';
import type { AttemptInput, AttemptOutput, FailureRecord } from '../machines/certificate.js';
import { failingSinceOf } from '../machines/pause.js';
import { nextAttemptTime, type TimingPolicy } from '../machines/policy.js';
import { keys } from '../storage-keys.js';
import type { CertificateBundle, CertificateMeta, Clock, Fence, Issuer, Logger, Storage } from '../types.js';
import { keepLease, type Lease } from './lease.js';
import type { MaterialCache } from './material-cache.js';
import type { PendingStores } from './pending-store.js';
import type { CorruptValues } from './corrupt-values.js';
import type { StorageClock } from './storage-clock.js';
import { parseFailureRecord, parseStoredCertificate, readableFailureRecord, serializeFailureRecord, serializeStoredCertificate } from './stored.js';
import { safeError } from '../safe-error.js';

/** What an attempt needs from the engine. */
export interface AttemptDeps {
  storage: Storage;
  issuers: readonly Issuer[];
  clock: Clock;
  logger: Logger;
  materials: MaterialCache;
  policy: TimingPolicy;
  /** Lease of the per-name issuance lock; renewed at a third of it while the attempt runs. */
  lockTtlMs: number;
  /** Every name the certificate is for, `input.name` first (a group's names; default: `input.name` alone). */
  names?: readonly string[];
  /** The storage's clock, for failure records shared with other processes (default: the local clock). */
  storageClock?: StorageClock;
  /** Where an issued certificate goes when storing it keeps failing (default: the attempt fails instead). */
  pending?: PendingStores;
  /** Told each issuer's outcome within the attempt (for events and metrics). */
  onIssuerResult?: (result: { name: string; issuer: string; ok: boolean; error?: unknown; durationMs: number }) => void;
  /**
   * Called first, before any lock, read or write: may throw to refuse (on-demand
   * permission and budget). What it returns is called when no order was placed
   * after all (the attempt adopted another process's certificate, or failed before ordering).
   */
  beforeIssue?: (input: AttemptInput) => Promise<(() => void) | void>;
  /** Stored values that cannot be used: absent, reported once (the actor's load reported them already). */
  corrupt: CorruptValues;
}

/** How far an attempt got, for whoever gives up on it (the deadline): orders placed so far. */
export interface AttemptProgress {
  ordered: number;
}

/** Run one attempt. Rejects with the attempt's error (for the statechart's `onError`). */
export async function runAttempt(deps: AttemptDeps, input: AttemptInput, signal: AbortSignal, progress: AttemptProgress = { ordered: 0 }): Promise<AttemptOutput> {
  // Permission and budget first: a name they refuse costs no lock, no read and no write.
  const giveBack = await deps.beforeIssue?.(input);
  const ordering = { placed: false };
  try {
    return await lockedAttempt(deps, input, signal, progress, ordering);
  } finally {
    // No order was placed after all (adopted, shared backoff, the floor, storage trouble): the budget gets its token back.
    if (!ordering.placed) giveBack?.();
  }
}

async function lockedAttempt(deps: AttemptDeps, input: AttemptInput, signal: AbortSignal, progress: AttemptProgress, ordering: { placed: boolean }): Promise<AttemptOutput> {
  const { storage } = deps;
  const lockKey = keys.issueLock(input.name);
  // The failure record as it was before we queued for the lock (see sharedBackoff).
  const failureBefore = await deps.corrupt.load(storage, keys.failure(input.name), input.name);
  const lock = await storage.lock(lockKey, deps.lockTtlMs, { signal });
  const lease = keepLease(lock, { ttlMs: deps.lockTtlMs, clock: deps.clock, logger: deps.logger.child({ name: input.name }), signal });
  const fence: Fence = { lockKey, token: lock.fencingToken };
  /** Stop renewing and release (idempotent): before waiting for a winner, who may need this very lock. */
  const letGo = async () => {
    lease.stop();
    await lock.release().catch((error: unknown) => deps.logger.warn({ name: input.name, err: safeError(error) }, 'lock release failed'));
  };
  try {
    lease.assertHeld();
    // Another process may have renewed while we waited for the lock: adopt, issue nothing.
    const fresh = await freshStoredCertificate(deps, input);
    if (fresh) return { certificate: fresh, adopted: true };
    // Or it may have failed while we waited: its backoff is the cluster's; spend no second order.
    await sharedBackoff(deps, input, failureBefore);
    // The name's orders as the cluster knows them: the floor holds for every process (an operator may bypass it).
    const orders = await clusterOrders(deps, input);
    const floor = floorUntil(orders, deps.clock.now(), deps.policy);
    if (floor !== undefined && !input.forced) throw new IssuanceFloorError(input.name, recentOrders(orders, deps.clock.now(), deps.policy).length, deps.policy.orderWindowMs, floor);

    lease.assertHeld();
    // Counted before it is placed: a stop or a crash mid-order must not forget it.
    await noteOrder(deps, input, orders, fence);
    let issued: Awaited<ReturnType<typeof issueWithFallback>>;
    try {
      ordering.placed = true;
      issued = await issueWithFallback(deps, input, lease, fence, progress);
    } catch (error) {
      // Recorded while we still hold the lock (fenced), so the next holder sees it (the
      // statechart's persistFailure lands only after the release).
      if (!lease.signal.aborted) await recordSharedFailure(deps, input, error, fence, orders);
      throw error;
    }
    const { bundle, meta, ordered } = issued;
    // In memory first: whatever happens to the write, this certificate can be served.
    deps.materials.put(meta.fingerprint, bundle);
    const unit = serializeStoredCertificate(bundle, meta, deps.clock.now());
    const outcome = await storeIssued(deps, input, unit, meta, lease, fence);
    if (outcome === 'fenced') {
      await letGo();
      return await adoptWinner(deps, input, { meta, unit }, new FencingError(lockKey, lock.fencingToken), signal);
    }
    if (outcome === 'pending') {
      deps.logger.warn({ name: input.name, fingerprint: meta.fingerprint }, 'issued certificate not stored yet (storage failing): served from memory, stored when the storage answers');
      deps.pending!.add(input.name, unit, meta);
      return { certificate: meta, adopted: false, ordered };
    }
    deps.corrupt.usable(keys.certificate(input.name));
    await settleFailureRecord(deps, input, withOrders(orders, ordered, deps.clock.now(), deps.policy), fence);
    return { certificate: meta, adopted: false, ordered };
  } catch (error) {
    // Our lease was taken over while we worked: not a failure. The new holder's certificate is the outcome.
    if (lease.lost && !signal.aborted) {
      await letGo();
      return await adoptWinner(deps, input, undefined, error, signal);
    }
    throw error;
  } finally {
    await letGo();
  }
}

/**
 * Store the issued unit, fenced. A write that fails for a passing reason is
 * tried again with the same unit while the lease holds (at most `lockTtlMs`):
 * first reading back whether the failed write landed after all (same
 * fingerprint: done). `fenced` when the lock was taken over; `pending` when
 * the storage kept failing and a pending store can take over.
 */
async function storeIssued(
  deps: AttemptDeps,
  input: AttemptInput,
  unit: string,
  meta: CertificateMeta,
  lease: Lease,
  fence: Fence,
): Promise<'stored' | 'fenced' | 'pending'> {
  const key = keys.certificate(input.name);
  const giveUpAt = deps.clock.now() + deps.lockTtlMs;
  let pause = 100;
  for (let tries = 0; ; tries++) {
    try {
      if (tries > 0 && (await storedFingerprint(deps, key)) === meta.fingerprint) return 'stored';
      lease.assertHeld();
      await deps.storage.store(key, unit, { fence });
      return 'stored';
    } catch (error) {
      if (error instanceof FencingError || error instanceof LockLostError || lease.lost) return 'fenced';
      if (lease.signal.aborted) throw error;
      const retryable = error instanceof CertstateError && isStorageFault(error.code);
      if (!retryable || deps.clock.now() + pause >= giveUpAt) {
        if (retryable && deps.pending) return 'pending';
        throw error;
      }
      deps.logger.warn({ name: input.name, err: safeError(error), attempt: tries + 1 }, 'storing the issued certificate failed; retrying with the same certificate');
      await sleep(deps.clock, pause, lease.signal).catch(() => {});
      pause = Math.min(pause * 2, 2000);
    }
  }
}

async function storedFingerprint(deps: AttemptDeps, key: string): Promise<string | undefined> {
  const raw = await deps.corrupt.load(deps.storage, key, key);
  if (raw === undefined) return undefined;
  try {
    return parseStoredCertificate(key, raw, { checkKey: false }).meta.fingerprint;
  } catch {
    return undefined;
  }
}

/**
 * We were fenced out (lease lost, or our write refused): another process holds
 * the name now. Wait, within a bound, for what it stores, and adopt it: the
 * outcome of this attempt is the cluster's certificate, not a failure. Our own
 * certificate counts if it is what storage holds (its write landed after all).
 * If nothing arrives in time, the fencing error is the outcome (a storage
 * fault, retried soon, not recorded as a failure).
 */
async function adoptWinner(
  deps: AttemptDeps,
  input: AttemptInput,
  ours: { meta: CertificateMeta; unit: string } | undefined,
  cause: unknown,
  signal: AbortSignal,
): Promise<AttemptOutput> {
  const bound = Math.min(120_000, Math.max(10_000, 2 * deps.lockTtlMs));
  const until = deps.clock.now() + bound;
  const logger = deps.logger.child({ name: input.name });
  logger.info({ waitMs: bound }, 'fenced out by another process: waiting for its certificate instead of ordering');
  for (;;) {
    try {
      if (ours && (await storedFingerprint(deps, keys.certificate(input.name))) === ours.meta.fingerprint) return { certificate: ours.meta, adopted: false };
      const newer = await freshStoredCertificate(deps, input);
      if (newer) return { certificate: newer, adopted: true };
    } catch (error) {
      logger.debug({ err: safeError(error) }, 'reading the winner\'s certificate failed; trying again');
    }
    if (deps.clock.now() >= until) {
      // Nobody stored a certificate (our own lease lapsed with no contender, or the winner failed): the one we
      // were issued is not thrown away — served from memory and stored later under the lock, fenced, unless
      // storage meanwhile holds a newer one. Ordering again would spend a second order for the same name.
      if (ours && deps.pending) {
        logger.warn({ fingerprint: ours.meta.fingerprint }, 'no other process stored a certificate: keeping ours (stored when the lock is ours again)');
        deps.pending.add(input.name, ours.unit, ours.meta);
        return { certificate: ours.meta, adopted: false };
      }
      throw cause instanceof CertstateError ? cause : new FencingError(keys.issueLock(input.name), 0);
    }
    await sleep(deps.clock, 250, signal);
  }
}

/** Sleep on the engine's clock; rejects if `signal` aborts. */
function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * If another process recorded a failure while we queued for the lock (the
 * record changed) and its backoff has not elapsed, fail with that failure
 * (its next attempt time as `retryAfter`, the floor of our own backoff).
 * Comparing records rather than clocks stays right under clock skew.
 */
async function sharedBackoff(deps: AttemptDeps, input: AttemptInput, before: string | undefined): Promise<void> {
  const key = keys.failure(input.name);
  const raw = await deps.corrupt.load(deps.storage, key, input.name);
  if (raw === undefined || raw === before) return;
  let record: FailureRecord;
  try {
    // On our clock, moved by the storage's: a process whose clock runs ahead still sees the backoff.
    record = parseFailureRecord(key, raw, await clockOffset(deps));
  } catch {
    return;
  }
  if (!record.lastError || record.nextAttemptAt === undefined || record.nextAttemptAt <= deps.clock.now()) return;
  const { type, message, code, problemType, detail } = record.lastError;
  const error = new CertstateError(`${message} (in another process of the cluster; its backoff is shared)`, {
    code: code ?? 'ERR_SHARED_BACKOFF',
    retryAfter: record.nextAttemptAt,
    ...(detail ? { detail } : {}),
  });
  error.name = type;
  if (problemType !== undefined) Object.assign(error, { problemType });
  throw error;
}

/** Write the cluster's failure record under our lock (fenced). Best effort: the statechart persists its own right after. */
async function recordSharedFailure(deps: AttemptDeps, input: AttemptInput, error: unknown, fence: Fence, orders: number[] | undefined): Promise<void> {
  const key = keys.failure(input.name);
  try {
    const now = deps.clock.now();
    const lastError = toErrorInfo(error, now);
    if (isStorageFault(lastError.code)) return;
    const raw = await deps.corrupt.load(deps.storage, key, input.name);
    const previous = raw === undefined ? undefined : readableFailureRecord(key, raw);
    const attempts = (previous?.attempts ?? 0) + 1;
    // The middle of the jitter range: the statechart's record, with its own jitter, follows.
    const placed = withOrders(orders, ordersPlacedBy(error), now, deps.policy);
    const nextAttemptAt = nextAttemptTime(now, attempts, 0.5, lastError.retryAfter, deps.policy);
    const record: FailureRecord = { attempts, lastError, nextAttemptAt, failingSince: failingSinceOf(previous) ?? now, ...(placed ? { orders: placed } : {}) };
    await deps.storage.store(key, serializeFailureRecord(record, await clockOffset(deps)), { fence });
  } catch (storeError) {
    deps.logger.warn({ name: input.name, err: safeError(storeError) }, 'could not record the failure for the cluster');
  }
}

/** Storage time minus local time (0 without a storage clock). */
export function clockOffset(deps: AttemptDeps): Promise<number> {
  return deps.storageClock?.offset() ?? Promise.resolve(0);
}

/** Whether a certificate covers every name the attempt is for. */
function coversAll(deps: AttemptDeps, input: AttemptInput, meta: CertificateMeta): boolean {
  return (deps.names ?? [input.name]).every((name) => certificateCoversName(meta, name));
}

/** A stored certificate newer than the one we hold and not yet due for renewal, or undefined. */
async function freshStoredCertificate(deps: AttemptDeps, input: AttemptInput): Promise<CertificateMeta | undefined> {
  const key = keys.certificate(input.name);
  const raw = await deps.corrupt.load(deps.storage, key, input.name);
  if (raw === undefined) return undefined;
  let unit: { bundle: CertificateBundle; meta: CertificateMeta };
  try {
    unit = parseStoredCertificate(key, raw);
  } catch (error) {
    // Checked in full here (the key too): a unit whose key does not match counts as absent.
    deps.corrupt.report(key, input.name, error);
    return undefined;
  }
  const { meta, bundle } = unit;
  if (meta.fingerprint === input.current?.fingerprint) return undefined;
  // Without jitter: "fresh" means another process has done this renewal, not that one is barely due
  // (nor a certificate not valid yet, or one the chart would renew at once).
  if (whyUnusable(meta, deps.clock.now(), deps.policy) !== undefined) return undefined;
  if (!coversAll(deps, input, meta)) return undefined;
  deps.materials.put(meta.fingerprint, bundle);
  return meta;
}

/**
 * Try every issuer in order within this one attempt; keep every issuer's error.
 * An issuer whose CA's Retry-After (from an earlier attempt) has not passed is
 * skipped while another issuer may still be asked: our backoff may be shorter
 * than one CA's Retry-After, never a reason to ask that CA early.
 */
async function issueWithFallback(deps: AttemptDeps, input: AttemptInput, lease: Lease, fence: Fence, progress: AttemptProgress) {
  const { signal } = lease;
  const now = deps.clock.now();
  const held = input.issuerRetryAfter ?? {};
  const onHold = (issuer: Issuer) => (held[issuer.id] ?? 0) > now;
  // All on hold only happens on an operator's FORCE_RENEW: then ask, as told.
  const skipHeld = deps.issuers.some((issuer) => !onHold(issuer));
  const errors: unknown[] = [];
  /** Per issuer: no order before this time (its CA's Retry-After). */
  const floors: Record<string, number> = {};
  /** Issuer calls placed: each counts toward the name's issuance floor, whatever it returns. */
  let ordered = 0;
  for (const issuer of deps.issuers) {
    // Never place an order once the lease is gone (or going): another process may be ordering.
    lease.assertHeld();
    const logger = deps.logger.child({ name: input.name, issuer: issuer.id });
    if (skipHeld && onHold(issuer)) {
      const hold = new IssuerOnHoldError(issuer.id, held[issuer.id]!);
      logger.debug({ until: held[issuer.id] }, 'issuer skipped: its CA asked us to wait (Retry-After)');
      deps.onIssuerResult?.({ name: input.name, issuer: issuer.id, ok: false, error: hold, durationMs: 0 });
      errors.push(hold);
      floors[issuer.id] = held[issuer.id]!;
      continue;
    }
    const startedAt = deps.clock.now();
    const report = (ok: boolean, error?: unknown) =>
      deps.onIssuerResult?.({ name: input.name, issuer: issuer.id, ok, error, durationMs: deps.clock.now() - startedAt });
    try {
      const request = { names: [...(deps.names ?? [input.name])], ...(input.current?.ariCertId ? { replaces: input.current.ariCertId } : {}) };
      ordered++;
      progress.ordered++;
      const bundle = await issuer.issue(request, { signal, logger, storage: deps.storage, now: () => deps.clock.now(), fence });
      // A result that arrives after stop, the attempt's deadline or a lost lease is discarded, never stored.
      if (signal.aborted) throw signal.reason;
      const meta = parseCertificateBundle(bundle, issuer.id);
      assertUsable(meta, deps.names ?? [input.name], issuer.id, deps);
      report(true);
      return { bundle, meta, ordered };
    } catch (error) {
      if (signal.aborted) throw withOrdersPlaced(signal.reason ?? error, ordered);
      report(false, error);
      logger.warn({ err: safeError(error) }, 'issuer failed');
      errors.push(error);
      const retryAfter = error instanceof CertstateError ? error.retryAfter : undefined;
      if (retryAfter !== undefined && retryAfter > now) floors[issuer.id] = retryAfter;
    }
  }
  if (errors.length === 1) throw withOrdersPlaced(errors[0], ordered);
  const times = Object.values(floors);
  // All issuers failed: the backoff floor is the *earliest* time any of them would take us again;
  // each one's own floor travels in the error (and the failure record) for the next attempt to skip it.
  throw withOrdersPlaced(new AllIssuersFailedError(errors, times.length === deps.issuers.length ? Math.min(...times) : undefined, floors), ordered);
}

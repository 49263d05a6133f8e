/**
 * One issuance attempt for one name — the body of the statechart's
 * `attempting` state. It runs at most once per name at a time in a process
 * (the statechart) and across processes (the storage lock):
 *
 *   take the lock → re-read storage (another process may have just finished)
 *   → try each issuer in order → store the unit with the lock's fencing token.
 *
 * It never touches machine state: it returns metadata (the key goes to the
 * material cache) or throws the attempt's error.
 */
import { certificateCoversName, parseCertificateBundle } from '../certs.js';
import { AllIssuersFailedError, CertstateError, FencingError, InvalidCertificateError, IssuerOnHoldError, isStorageOutage, toErrorInfo } from '../errors.js';
import type { AttemptInput, AttemptOutput, FailureRecord } from '../machines/certificate.js';
import { nextAttemptTime, renewalTime, type TimingPolicy } from '../machines/policy.js';
import { keys } from '../storage-keys.js';
import type { CertificateBundle, CertificateMeta, Clock, Issuer, Logger, Storage } from '../types.js';
import type { MaterialCache } from './material-cache.js';
import { parseFailureRecord, parseStoredCertificate, serializeFailureRecord, serializeStoredCertificate } from './stored.js';
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
  /** Told each issuer's outcome within the attempt (for events and metrics). */
  onIssuerResult?: (result: { name: string; issuer: string; ok: boolean; error?: unknown; durationMs: number }) => void;
  /** Called before issuing (not before adopting): may throw to refuse (on-demand permission and rate limit). */
  beforeIssue?: (input: AttemptInput) => void | Promise<void>;
}

/** Run one attempt. Rejects with the attempt's error (for the statechart's `onError`). */
export async function runAttempt(deps: AttemptDeps, input: AttemptInput, signal: AbortSignal): Promise<AttemptOutput> {
  const { storage, clock } = deps;
  const lockKey = keys.issueLock(input.name);
  // The failure record as it was before we queued for the lock (see sharedBackoff).
  const failureBefore = await storage.load(keys.failure(input.name));
  const lock = await storage.lock(lockKey, deps.lockTtlMs, { signal });
  const lease = keepLeaseAlive(lock, deps, signal);
  try {
    signal.throwIfAborted();
    // Another process may have renewed while we waited for the lock: adopt, issue nothing.
    const fresh = await freshStoredCertificate(deps, input);
    if (fresh) return { certificate: fresh, adopted: true };
    // Or it may have failed while we waited: its backoff is the cluster's; spend no second order.
    await sharedBackoff(deps, input, failureBefore);

    await deps.beforeIssue?.(input);
    let issued: Awaited<ReturnType<typeof issueWithFallback>>;
    try {
      issued = await issueWithFallback(deps, input, signal);
    } catch (error) {
      // Recorded while we still hold the lock, so the next holder sees it (the
      // statechart's persistFailure lands only after the release).
      if (!signal.aborted) await recordSharedFailure(deps, input, error, { lockKey, token: lock.fencingToken });
      throw error;
    }
    const { bundle, meta } = issued;
    try {
      await storage.store(keys.certificate(input.name), serializeStoredCertificate(bundle, meta, clock.now()), {
        fence: { lockKey, token: lock.fencingToken },
      });
    } catch (error) {
      // Our lease was lost (paused process) and someone newer holds the name: adopt theirs.
      if (error instanceof FencingError) {
        const newer = await freshStoredCertificate(deps, input);
        if (newer) return { certificate: newer, adopted: true };
      }
      throw error;
    }
    deps.materials.put(meta.fingerprint, bundle);
    await storage.delete(keys.failure(input.name)).catch((error: unknown) => {
      deps.logger.warn({ name: input.name, err: safeError(error) }, 'could not clear the failure record');
    });
    return { certificate: meta, adopted: false };
  } finally {
    lease.stop();
    await lock.release().catch((error: unknown) => deps.logger.warn({ name: input.name, err: safeError(error) }, 'lock release failed'));
  }
}

/**
 * If another process recorded a failure while we queued for the lock (the
 * record changed) and its backoff has not elapsed, fail with that failure
 * (its next attempt time as `retryAfter`, the floor of our own backoff).
 * Comparing records rather than clocks stays right under clock skew.
 */
async function sharedBackoff(deps: AttemptDeps, input: AttemptInput, before: string | undefined): Promise<void> {
  const key = keys.failure(input.name);
  const raw = await deps.storage.load(key);
  if (raw === undefined || raw === before) return;
  let record: FailureRecord;
  try {
    record = parseFailureRecord(key, raw);
  } catch {
    return;
  }
  if (!record.lastError || record.nextAttemptAt === undefined || record.nextAttemptAt <= deps.clock.now()) return;
  const { type, message, code, detail } = record.lastError;
  const error = new CertstateError(`${message} (in another process of the cluster; its backoff is shared)`, {
    code: code ?? 'ERR_SHARED_BACKOFF',
    retryAfter: record.nextAttemptAt,
    ...(detail ? { detail } : {}),
  });
  error.name = type;
  throw error;
}

/** Write the cluster's failure record under our lock (fenced). Best effort: the statechart persists its own right after. */
async function recordSharedFailure(deps: AttemptDeps, input: AttemptInput, error: unknown, fence: { lockKey: string; token: number }): Promise<void> {
  const key = keys.failure(input.name);
  try {
    const now = deps.clock.now();
    const lastError = toErrorInfo(error, now);
    if (isStorageOutage(lastError.code)) return;
    const raw = await deps.storage.load(key);
    const attempts = (raw === undefined ? 0 : parseFailureRecord(key, raw).attempts) + 1;
    // The middle of the jitter range: the statechart's record, with its own jitter, follows.
    const record: FailureRecord = { attempts, lastError, nextAttemptAt: nextAttemptTime(now, attempts, 0.5, lastError.retryAfter, deps.policy) };
    await deps.storage.store(key, serializeFailureRecord(record), { fence });
  } catch (storeError) {
    deps.logger.warn({ name: input.name, err: safeError(storeError) }, 'could not record the failure for the cluster');
  }
}

/** A stored certificate newer than the one we hold and not yet due for renewal, or undefined. */
async function freshStoredCertificate(deps: AttemptDeps, input: AttemptInput): Promise<CertificateMeta | undefined> {
  const key = keys.certificate(input.name);
  const raw = await deps.storage.load(key);
  if (raw === undefined) return undefined;
  let unit: { bundle: CertificateBundle; meta: CertificateMeta };
  try {
    unit = parseStoredCertificate(key, raw);
  } catch (error) {
    deps.logger.warn({ name: input.name, err: safeError(error) }, 'ignoring corrupt stored certificate');
    return undefined;
  }
  const { meta, bundle } = unit;
  if (meta.fingerprint === input.current?.fingerprint) return undefined;
  const now = deps.clock.now();
  // Without jitter: "fresh" means another process has done this renewal, not that one is barely due.
  if (now >= renewalTime(meta, 0, deps.policy) || now >= meta.notAfter) return undefined;
  if (!certificateCoversName(meta, input.name)) return undefined;
  deps.materials.put(meta.fingerprint, bundle);
  return meta;
}

/**
 * Try every issuer in order within this one attempt; keep every issuer's error.
 * An issuer whose CA's Retry-After (from an earlier attempt) has not passed is
 * skipped while another issuer may still be asked: our backoff may be shorter
 * than one CA's Retry-After, never a reason to ask that CA early.
 */
async function issueWithFallback(deps: AttemptDeps, input: AttemptInput, signal: AbortSignal) {
  const now = deps.clock.now();
  const held = input.issuerRetryAfter ?? {};
  const onHold = (issuer: Issuer) => (held[issuer.id] ?? 0) > now;
  // All on hold only happens on an operator's FORCE_RENEW: then ask, as told.
  const skipHeld = deps.issuers.some((issuer) => !onHold(issuer));
  const errors: unknown[] = [];
  /** Per issuer: no order before this time (its CA's Retry-After). */
  const floors: Record<string, number> = {};
  for (const issuer of deps.issuers) {
    signal.throwIfAborted();
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
      const request = { names: [input.name], ...(input.current?.ariCertId ? { replaces: input.current.ariCertId } : {}) };
      const bundle = await issuer.issue(request, { signal, logger, storage: deps.storage, now: () => deps.clock.now() });
      const meta = parseCertificateBundle(bundle, issuer.id);
      if (!certificateCoversName(meta, input.name)) {
        throw new InvalidCertificateError(`issuer ${issuer.id} returned a certificate that does not cover ${input.name}`);
      }
      report(true);
      return { bundle, meta };
    } catch (error) {
      if (signal.aborted) throw signal.reason ?? error;
      report(false, error);
      logger.warn({ err: safeError(error) }, 'issuer failed');
      errors.push(error);
      const retryAfter = error instanceof CertstateError ? error.retryAfter : undefined;
      if (retryAfter !== undefined && retryAfter > now) floors[issuer.id] = retryAfter;
    }
  }
  if (errors.length === 1) throw errors[0];
  const times = Object.values(floors);
  // All issuers failed: the backoff floor is the *earliest* time any of them would take us again;
  // each one's own floor travels in the error (and the failure record) for the next attempt to skip it.
  throw new AllIssuersFailedError(errors, times.length === deps.issuers.length ? Math.min(...times) : undefined, floors);
}

/** Renew the lock's lease every third of its TTL while the attempt runs. */
function keepLeaseAlive(lock: { renew(): Promise<void> }, deps: AttemptDeps, signal: AbortSignal) {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let stopped = false;
  const schedule = () => {
    timer = deps.clock.setTimeout(() => {
      if (stopped || signal.aborted) return;
      lock.renew().then(schedule, (error: unknown) => deps.logger.warn({ err: safeError(error) }, 'lock lease renewal failed'));
    }, Math.max(50, Math.floor(deps.lockTtlMs / 3)));
  };
  schedule();
  return {
    stop() {
      stopped = true;
      if (timer !== undefined) deps.clock.clearTimeout(timer);
    },
  };
}

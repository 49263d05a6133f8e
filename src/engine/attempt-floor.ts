/**
 * The attempt's side of "never hammer a CA": what an issued certificate must
 * be worth before it is kept (the chart's own `whyUnusable`, and the names),
 * the name's orders as the cluster knows them (the failure record), and the
 * record a success leaves for the issuance floor.
 */
import { certificateCoversName } from '../certs.js';
import { UnusableCertificateError, type UnusableReason } from '../errors.js';
import type { AttemptInput, FailureRecord } from '../machines/certificate.js';
import { recentOrders, whyUnusable, withOrders } from '../machines/floor.js';
import { safeError } from '../safe-error.js';
import { keys } from '../storage-keys.js';
import type { CertificateMeta, Fence } from '../types.js';
import { clockOffset, type AttemptDeps } from './attempt.js';
import { parseFailureRecord, serializeFailureRecord } from './stored.js';

/**
 * After a success the failure record goes, unless the floor's window holds
 * other orders: then it stays, with no failure, as the cluster's count of them
 * (the certificate in hand stands for itself: one order at its notBefore).
 */
export async function settleFailureRecord(deps: AttemptDeps, input: AttemptInput, orders: number[] | undefined, fence: Fence): Promise<void> {
  const key = keys.failure(input.name);
  try {
    if (orders !== undefined && orders.length > 1) await deps.storage.store(key, serializeFailureRecord({ attempts: 0, orders }, await clockOffset(deps)), { fence });
    else await deps.storage.delete(key, { fence });
  } catch (error) {
    deps.logger.warn({ name: input.name, err: safeError(error) }, 'could not clear the failure record');
  }
}

/**
 * Record the order about to be placed in the failure record (fenced, the rest
 * of the record kept), so that a stop or a crash before the attempt ends still
 * counts it for the next process. Best effort: the outcome's record follows.
 */
export async function noteOrder(deps: AttemptDeps, input: AttemptInput, orders: number[] | undefined, fence: Fence): Promise<void> {
  const key = keys.failure(input.name);
  try {
    const offset = await clockOffset(deps);
    // Stored bytes of any shape count as absent (corrupt-values.ts): the order is noted in a fresh record.
    const raw = await deps.corrupt.load(deps.storage, key, input.name);
    let record: FailureRecord = { attempts: 0 };
    if (raw !== undefined) {
      try {
        record = parseFailureRecord(key, raw, offset);
      } catch {
        record = { attempts: 0 };
      }
    }
    const known = recentOrders(record.orders, deps.clock.now(), deps.policy);
    const base = known.length > (orders?.length ?? 0) ? known : orders;
    record.orders = withOrders(base, 1, deps.clock.now(), deps.policy);
    await deps.storage.store(key, serializeFailureRecord(record, offset), { fence });
  } catch (error) {
    deps.logger.warn({ name: input.name, err: safeError(error) }, 'could not record the order for the issuance floor');
  }
}

/** The name's recent orders: the chart's, and those another process recorded (the longer list wins: they overlap). */
export async function clusterOrders(deps: AttemptDeps, input: AttemptInput): Promise<number[] | undefined> {
  const now = deps.clock.now();
  const own = recentOrders(input.orders, now, deps.policy);
  const key = keys.failure(input.name);
  // Stored bytes of any shape count as absent (reported once: corrupt-values.ts).
  const raw = await deps.corrupt.load(deps.storage, key, input.name);
  let stored: number[] = [];
  if (raw !== undefined) {
    try {
      stored = recentOrders(parseFailureRecord(key, raw, await clockOffset(deps)).orders, now, deps.policy);
    } catch {
      stored = [];
    }
  }
  const longer = stored.length > own.length ? stored : own;
  return longer.length > 0 ? longer : undefined;
}

/**
 * A successful attempt yields a usable certificate, or it is a failure: one
 * that does not cover every name ordered, is not valid yet, has expired, or is due for
 * renewal within `minRenewalIntervalMs` is never stored nor served (the
 * chart's own test, `whyUnusable`).
 */
export function assertUsable(meta: CertificateMeta, names: readonly string[], issuerId: string, deps: AttemptDeps): void {
  const missing = names.filter((name) => !certificateCoversName(meta, name));
  if (missing.length > 0) throw new UnusableCertificateError(`issuer ${issuerId} returned a certificate that does not cover ${missing.join(', ')}`, 'names');
  const name = names.join(', ');
  const now = deps.clock.now();
  const why = whyUnusable(meta, now, deps.policy);
  if (why === undefined) return;
  const at = (t: number) => new Date(t).toISOString();
  const details: Record<UnusableReason, string> = {
    names: '',
    'not-yet-valid': `not valid before ${at(meta.notBefore)}`,
    expired: `expired at ${at(meta.notAfter)}`,
    'renewal-past': `due for renewal at once (valid ${at(meta.notBefore)} – ${at(meta.notAfter)})`,
  };
  const detail = details[why];
  throw new UnusableCertificateError(`issuer ${issuerId} returned an unusable certificate for ${name}: ${detail} (our clock: ${at(now)})`, why);
}

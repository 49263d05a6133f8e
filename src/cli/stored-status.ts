/**
 * Status read straight from storage, without starting an engine (which would
 * start renewals): every stored certificate and failure record, and what an
 * engine would do next with it. Uses the default timing policy, without jitter.
 */
import { parseFailureRecord, parseStoredCertificate } from '../engine/stored.js';
import { defaultTimingPolicy, renewalTime, type TimingPolicy } from '../machines/policy.js';
import { keys } from '../storage-keys.js';
import type { CertificateBundle, CertificateMeta, ErrorInfo, Storage } from '../types.js';

/**
 * Where a stored name stands:
 * - `valid`: certificate in date, renewal not yet due;
 * - `renewal-due`: certificate in date, renewal due (an engine renews at start);
 * - `expired`: certificate expired;
 * - `failed-backoff`: the last attempt failed and its backoff has not elapsed;
 * - `no-certificate`: a failure record but no certificate.
 */
export type StoredState = 'valid' | 'renewal-due' | 'expired' | 'failed-backoff' | 'no-certificate';

/** What an engine would do next for a name. */
export interface NextAction {
  action: 'renew' | 'retry' | 'obtain';
  /** When, ms since epoch (absent: now). */
  at?: number;
}

/** One name's stored status (`certstate status --json` prints a list of these). */
export interface StoredNameStatus {
  name: string;
  state: StoredState;
  certificate?: CertificateMeta;
  /** Latest time renewal is due (the engine picks a jittered time at or before it). */
  renewAt?: number;
  /** Consecutive failed attempts. */
  attempts: number;
  lastError?: ErrorInfo;
  nextAttemptAt?: number;
  next: NextAction;
  /** Set when a stored value could not be read. */
  corrupt?: string;
}

/** Names (`example.com`, `*.example.com`) stored under a key prefix (`certificates/`). */
export async function storedNames(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for (const key of await storage.list(prefix)) {
    const segment = key.slice(prefix.length);
    if (!segment.endsWith('.json') || segment.includes('/')) continue;
    const name = segment.slice(0, -'.json'.length);
    out.push(name.startsWith('_wildcard_.') ? `*.${name.slice('_wildcard_.'.length)}` : name);
  }
  return out;
}

/** A name's stored certificate unit (key included), or `undefined` when absent. Throws `CorruptStorageError`. */
export async function loadStoredCertificate(storage: Storage, name: string): Promise<{ bundle: CertificateBundle; meta: CertificateMeta } | undefined> {
  const raw = await storage.load(keys.certificate(name));
  return raw === undefined ? undefined : parseStoredCertificate(keys.certificate(name), raw);
}

/** Status of every name in storage, sorted by name. */
export async function readStoredStatus(storage: Storage, now: number, policy: TimingPolicy = defaultTimingPolicy): Promise<StoredNameStatus[]> {
  const names = new Set([...(await storedNames(storage, keys.certificatesPrefix)), ...(await storedNames(storage, 'failures/'))]);
  const out: StoredNameStatus[] = [];
  for (const name of [...names].sort()) out.push(await statusOf(storage, name, now, policy));
  return out;
}

async function statusOf(storage: Storage, name: string, now: number, policy: TimingPolicy): Promise<StoredNameStatus> {
  const problems: string[] = [];
  let certificate: CertificateMeta | undefined;
  try {
    certificate = (await loadStoredCertificate(storage, name))?.meta;
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
  }
  let failure: ReturnType<typeof parseFailureRecord> | undefined;
  try {
    const raw = await storage.load(keys.failure(name));
    if (raw !== undefined) failure = parseFailureRecord(keys.failure(name), raw);
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
  }
  const status: StoredNameStatus = { name, state: 'no-certificate', attempts: failure?.attempts ?? 0, next: { action: 'obtain' } };
  if (certificate) status.certificate = certificate;
  if (failure?.lastError) status.lastError = failure.lastError;
  if (failure?.nextAttemptAt !== undefined) status.nextAttemptAt = failure.nextAttemptAt;
  if (problems.length) status.corrupt = problems.join('; ');

  // The same order of questions as the statechart's routing state.
  const backoff = failure?.nextAttemptAt !== undefined && now < failure.nextAttemptAt;
  if (certificate) status.renewAt = renewalTime(certificate, 0, policy);
  if (certificate && now < certificate.notAfter && now < status.renewAt!) {
    status.state = 'valid';
    status.next = { action: 'renew', at: status.renewAt! };
  } else if (backoff) {
    status.state = 'failed-backoff';
    status.next = { action: 'retry', at: failure!.nextAttemptAt! };
  } else if (certificate) {
    status.state = now < certificate.notAfter ? 'renewal-due' : 'expired';
    status.next = { action: 'renew' };
  }
  return status;
}

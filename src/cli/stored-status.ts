/**
 * Status read straight from storage, without starting an engine (which would
 * start renewals): every stored certificate and failure record, and what an
 * engine would do next with it — asked of the lifecycle chart itself (the
 * state a name read from storage reaches), with the default timing policy
 * and no jitter (the latest renewal time).
 */
import { createCertificateMachine, lifecycleStateOf, type LoadedState } from '../machines/certificate.js';
import { defaultTimingPolicy, type TimingPolicy } from '../machines/policy.js';
import { chartQuestions, type ChartQuestions } from '../machines/questions.js';
import { parseFailureRecord, parseStoredCertificate } from '../engine/stored.js';
import { keys } from '../storage-keys.js';
import type { CertificateBundle, CertificateMeta, ErrorInfo, LifecycleState, Storage } from '../types.js';

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

/** What the CLI calls the state a name read from storage reaches, and what comes next there. */
const NEXT: Partial<Record<LifecycleState, { state: StoredState; action: NextAction['action']; at?: 'renewAt' | 'nextAttemptAt' }>> = {
  valid: { state: 'valid', action: 'renew', at: 'renewAt' },
  renewing: { state: 'renewal-due', action: 'renew' },
  'expired-renewing': { state: 'expired', action: 'renew' },
  obtaining: { state: 'no-certificate', action: 'obtain' },
  'failed-backoff': { state: 'failed-backoff', action: 'retry', at: 'nextAttemptAt' },
};

/** Status of every name in storage, sorted by name. */
export async function readStoredStatus(storage: Storage, now: number, policy: TimingPolicy = defaultTimingPolicy): Promise<StoredNameStatus[]> {
  const names = new Set([...(await storedNames(storage, keys.certificatesPrefix)), ...(await storedNames(storage, 'failures/'))]);
  const out: StoredNameStatus[] = [];
  const chart = chartQuestions(createCertificateMachine({ now: () => now, random: () => 0, policy }), () => now);
  for (const name of [...names].sort()) out.push(await statusOf(storage, name, chart));
  return out;
}

async function statusOf(storage: Storage, name: string, chart: ChartQuestions): Promise<StoredNameStatus> {
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

  const loaded: LoadedState = { ...(certificate ? { certificate } : {}), ...(failure ? { failure } : {}) };
  const reached = chart.afterLoad(loaded);
  const { context } = reached;
  if (context.renewAt !== undefined) status.renewAt = context.renewAt;
  const next = NEXT[lifecycleStateOf(reached.value)];
  if (next) {
    const at = next.at && context[next.at];
    status.state = next.state;
    status.next = { action: next.action, ...(at !== undefined ? { at } : {}) };
  }
  return status;
}

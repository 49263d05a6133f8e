/**
 * Status without materialising every name: a page of names (a cursor, a
 * filter, a bounded size), an async walk that yields to the event loop, and
 * a summary (counts by state kept as states change; expiry counts computed
 * by one pass over the records reading fields, no object per name).
 * At a million names `status()` builds a million objects; none of these do.
 */
import { ConfigError } from '../errors.js';
import { LIFECYCLE_STATES, type LifecycleState, type NameStatus } from '../types.js';
import type { NameRecord } from './name-record.js';

/** Which names a status page or walk lists (every condition given must hold). */
export interface StatusFilter {
  /** Only names in this state, or in one of these states. */
  state?: LifecycleState | readonly LifecycleState[];
  /** Only managed names (`true`) or only on-demand names (`false`). */
  managed?: boolean;
  /** Only names containing this text (after normalisation: lower case), e.g. `.example.com`. */
  nameIncludes?: string;
}

/** A page request of `engine.statusPage()`. */
export interface StatusQuery extends StatusFilter {
  /** Names per page, 1–10,000 (default 100). */
  limit?: number;
  /** The `next` cursor of the previous page (opaque); absent: from the first name. */
  after?: string;
}

/** One page of `engine.statusPage()`. */
export interface StatusPage {
  /** The names of this page, in the order the engine came to know them. */
  names: NameStatus[];
  /** Pass as `after` for the following page; absent on the last page. */
  next?: string;
}

/** Counts over every name (`engine.statusSummary()`), for status pages and metrics. */
export interface StatusSummary {
  /** Names the engine holds. */
  names: number;
  /** Names per lifecycle state (every state present, 0 included). */
  byState: Record<LifecycleState, number>;
  /** Names whose certificate's notAfter is within 7 days of `at` (expired ones included); 0 with `expiry: false`. */
  expiringWithin7d: number;
  /** … within 14 days. */
  expiringWithin14d: number;
  /** Names whose certificate has expired at `at`. */
  expired: number;
  /** The earliest notAfter of any name's certificate, ms since epoch (absent with none). */
  nextExpiry?: number;
  /** When the expiry counts were taken, ms since epoch (the engine clock). */
  at: number;
}

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 10_000;
const DAY_MS = 86_400_000;
/** The async walk yields to the event loop after this many names (a million names must not block handshakes). */
const WALK_SLICE = 1024;

/** Names per lifecycle state, updated as each name's shown state changes (O(1) per change). */
export class StateCounts {
  readonly #counts = new Map<LifecycleState, number>(LIFECYCLE_STATES.map((s) => [s, 0]));

  add(state: LifecycleState): void {
    this.#counts.set(state, (this.#counts.get(state) ?? 0) + 1);
  }

  remove(state: LifecycleState): void {
    this.#counts.set(state, (this.#counts.get(state) ?? 0) - 1);
  }

  move(from: LifecycleState, to: LifecycleState): void {
    this.remove(from);
    this.add(to);
  }

  count(state: LifecycleState): number {
    return this.#counts.get(state) ?? 0;
  }

  clear(): void {
    for (const state of this.#counts.keys()) this.#counts.set(state, 0);
  }

  byState(): Record<LifecycleState, number> {
    return Object.fromEntries(this.#counts) as Record<LifecycleState, number>;
  }
}

/** A filter checked once, as a predicate over records (no status object built). */
export function recordFilter(filter: StatusFilter = {}): (record: NameRecord) => boolean {
  const states = filter.state === undefined ? undefined : new Set<LifecycleState>(typeof filter.state === 'string' ? [filter.state] : filter.state);
  if (states) for (const s of states) if (!LIFECYCLE_STATES.includes(s)) throw new ConfigError(`status filter: unknown state ${JSON.stringify(s)}`);
  if (filter.managed !== undefined && typeof filter.managed !== 'boolean') throw new ConfigError('status filter: `managed` must be a boolean');
  if (filter.nameIncludes !== undefined && typeof filter.nameIncludes !== 'string') throw new ConfigError('status filter: `nameIncludes` must be a string');
  const includes = filter.nameIncludes?.toLowerCase();
  const managed = filter.managed;
  return (record) =>
    (states === undefined || states.has(record.state)) && (managed === undefined || record.managed === managed) && (includes === undefined || record.name.includes(includes));
}

/** The page's size, checked. */
export function pageSize(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_SIZE) throw new ConfigError(`status page: \`limit\` must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  return limit;
}

/** The sequence number a cursor names (names known after it are listed next). */
function cursorSeq(after: string | undefined): number {
  if (after === undefined) return -1;
  if (!/^[0-9]{1,15}$/.test(after)) throw new ConfigError('status page: `after` is not a cursor this engine gave');
  return Number(after);
}

/**
 * One page over `records` (in the order they were added, i.e. by `seq`):
 * names after the cursor that pass the filter, at most `limit`. Names before
 * the cursor are skipped by comparing numbers: no object is built for them.
 */
export function statusPage(records: Iterable<NameRecord>, query: StatusQuery, statusOf: (record: NameRecord) => NameStatus): StatusPage {
  const limit = pageSize(query.limit);
  const after = cursorSeq(query.after);
  const keep = recordFilter(query);
  const names: NameStatus[] = [];
  let lastSeq = after;
  for (const record of records) {
    if (record.seq <= after || !keep(record)) continue;
    // One more name passes: the page is full and there is a next one.
    if (names.length === limit) return { names, next: String(lastSeq) };
    names.push(statusOf(record));
    lastSeq = record.seq;
  }
  return { names };
}

/** Every name passing `filter`, one status at a time, yielding to the event loop every 1,024 names. */
export async function* walkStatuses(
  records: Iterable<NameRecord>,
  filter: StatusFilter,
  statusOf: (record: NameRecord) => NameStatus,
  held: (record: NameRecord) => boolean,
): AsyncGenerator<NameStatus, void, undefined> {
  const keep = recordFilter(filter);
  let seen = 0;
  for (const record of records) {
    if (++seen % WALK_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
    // A name removed while we yielded is not listed.
    if (!held(record) || !keep(record)) continue;
    yield statusOf(record);
  }
}

/** Options of `engine.statusSummary()`. */
export interface StatusSummaryOptions {
  /** Count expiring and expired certificates (default true): one pass over every name; `false` gives the counts by state alone, O(1). */
  expiry?: boolean;
}

/** The summary: counts by state as kept, expiry counts from one pass over the records' fields. */
export function summarize(records: Iterable<NameRecord>, size: number, counts: StateCounts, now: number, options: StatusSummaryOptions = {}): StatusSummary {
  let within7 = 0;
  let within14 = 0;
  let expired = 0;
  let nextExpiry = Infinity;
  for (const record of options.expiry === false ? [] : records) {
    const notAfter = record.certificate?.notAfter;
    if (notAfter === undefined) continue;
    if (notAfter <= now + 7 * DAY_MS) within7++;
    if (notAfter <= now + 14 * DAY_MS) within14++;
    if (notAfter <= now) expired++;
    if (notAfter < nextExpiry) nextExpiry = notAfter;
  }
  return {
    names: size,
    byState: counts.byState(),
    expiringWithin7d: within7,
    expiringWithin14d: within14,
    expired,
    ...(Number.isFinite(nextExpiry) ? { nextExpiry } : {}),
    at: now,
  };
}

/** The same summary from a list of statuses (the admin handler's fallback for engines without `statusSummary`). */
export function summarizeStatuses(status: readonly NameStatus[], now: number): StatusSummary {
  const counts = new StateCounts();
  const records = status.map((s) => ({ certificate: s.certificate }) as NameRecord);
  for (const s of status) counts.add(s.state);
  return summarize(records, status.length, counts, now);
}

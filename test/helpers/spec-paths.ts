/**
 * Paths from the specification (test/helpers/lifecycle-spec.ts), not from the
 * chart: a breadth-first search over the spec's states and facts, offering in
 * every state every event a name can see there — the outcome of what the spec
 * says is in flight, every operator and storage event (handled or not: an
 * event the spec ignores must change nothing), and the earliest timer the
 * spec arms. One path per edge, so every row of the spec is walked, and a
 * transition the chart dropped or added shows up in the replay.
 *
 * Events are made at the time they happen (certificates relative to the
 * path's clock), so a path replays under any random source.
 */
import { IssuanceError, IssuanceFloorError, StorageError, UnusableCertificateError } from '../../src/errors.js';
import { withOrdersPlaced } from '../../src/machines/floor.js';
import type { CertificateMeta } from '../../src/types.js';
import { CLOCK_SKEW_MS, FLOOR_ORDERS, LifecycleSpec, specFloorUntil, type LoadedRecord, type SpecEvent } from './lifecycle-spec.js';

export const MIN = 60_000;
export const DAY = 86_400_000;

/** One event of a path: made from the spec's view at the time it happens. */
export interface PathEvent {
  label: string;
  make(spec: LifecycleSpec, now: number): SpecEvent;
}

let serial = 0;
const certificate = (label: string, notBefore: number, notAfter: number, name: string): CertificateMeta => {
  const fingerprint = `${label}#${++serial}`;
  return { fingerprint, serial: fingerprint, names: [name], notBefore, notAfter, issuer: 'CN=spec', issuerId: 'spec' };
};
const storedFailure = (now: number, ms: number, withError = true) => ({
  attempts: 1,
  nextAttemptAt: now + ms,
  ...(withError ? { lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 1 } } : {}),
});
const withError = (message: string, fields: Record<string, unknown>) => Object.assign(new Error(message), fields);

/** An on-demand name's pause, or for a managed name (which never pauses) the oracle's on-demand one: 3 days. */
const pauseOf = (pauseAfterMs: number | undefined) => pauseAfterMs ?? 3 * DAY;

/** What storage may hold for a name when it is read (`pauseAfterMs`: the name's, when on-demand). */
const LOADS: Record<string, (now: number, name: string, pauseAfterMs?: number) => LoadedRecord> = {
  nothing: () => ({}),
  valid: (now, n) => ({ certificate: certificate('valid', now - DAY, now + 89 * DAY, n) }),
  due: (now, n) => ({ certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n) }),
  expired: (now, n) => ({ certificate: certificate('expired', now - 100 * DAY, now - 10 * DAY, n) }),
  // Exactly 10 days: not short-lived (2/3 of the lifetime, not 1/2).
  tenDays: (now, n) => ({ certificate: certificate('ten-days', now - DAY, now + 9 * DAY, n) }),
  // A name woken from sleep keeps the renewal time it drew.
  woken: (now, n) => ({ certificate: certificate('woken', now - DAY, now + 89 * DAY, n), renewAt: now + 5 * DAY }),
  backoff: (now) => ({ failure: storedFailure(now, 10 * MIN) }),
  backoffWithoutError: (now) => ({ failure: storedFailure(now, 10 * MIN, false) }),
  expiredInBackoff: (now, n) => ({ certificate: certificate('expired', now - 100 * DAY, now - 10 * DAY, n), failure: storedFailure(now, 10 * MIN) }),
  dueInBackoff: (now, n) => ({ certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n), failure: storedFailure(now, 10 * MIN) }),
  // A backoff recorded by another process that outlasts a woken name's renewal time: it still holds then.
  wokenInLongBackoff: (now, n) => ({ certificate: certificate('woken', now - DAY, now + 89 * DAY, n), renewAt: now + 5 * DAY, failure: storedFailure(now, 30 * DAY) }),
  // A backoff that outlasts the certificate: it expires while refused attempts wait.
  dueInLongBackoff: (now, n) => ({ certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n), failure: storedFailure(now, 30 * DAY) }),
  // The issuance floor, as another process (or a previous run) recorded it: a window full of orders, no failure.
  floorFull: (now) => ({ failure: { attempts: 0, orders: floorOrders(now) } }),
  floorFullDue: (now, n) => ({ certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n), failure: { attempts: 0, orders: floorOrders(now) } }),
  // A due certificate ordered a minute ago: its renewal waits for minRenewalIntervalMs after that order.
  orderedAMinuteAgo: (now, n) => ({ certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n), failure: { attempts: 0, orders: [now - MIN] } }),
  // A certificate another process stored with a clock an hour ahead: not valid yet, counts as none.
  notYetValid: (now, n) => ({ certificate: certificate('future', now + 60 * MIN, now + 90 * DAY, n) }),
  // The clock skew's edge: ahead by exactly CLOCK_SKEW_MS is valid already; by one ms more, not yet.
  aheadByTheSkew: (now, n) => ({ certificate: certificate('valid', now + CLOCK_SKEW_MS, now + 90 * DAY, n) }),
  aheadByMoreThanTheSkew: (now, n) => ({ certificate: certificate('future', now + CLOCK_SKEW_MS + 1, now + 90 * DAY, n) }),
  // Failing for four days with nothing to serve (an on-demand name pauses; a managed one does not).
  failingForDays: (now) => ({
    failure: { attempts: 6, nextAttemptAt: now - MIN, failingSince: now - 4 * DAY, lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 6 * 60 * MIN } },
  }),
  failingForDaysExpired: (now, n) => ({
    certificate: certificate('expired', now - 100 * DAY, now - 10 * DAY, n),
    failure: { attempts: 6, nextAttemptAt: now + 10 * MIN, failingSince: now - 4 * DAY, lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 1 } },
  }),
  // The pause's edge: failing for exactly pauseAfterMs pauses an on-demand name; one ms less, it tries again.
  failingForThePause: (now, _, pauseAfterMs) => ({
    failure: { attempts: 6, nextAttemptAt: now - MIN, failingSince: now - pauseOf(pauseAfterMs), lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 6 * 60 * MIN } },
  }),
  failingForLessThanThePause: (now, _, pauseAfterMs) => ({
    failure: { attempts: 6, nextAttemptAt: now - MIN, failingSince: now - pauseOf(pauseAfterMs) + 1, lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 6 * 60 * MIN } },
  }),
  // Failing for four days but still serving: it keeps renewing in its backoff.
  failingForDaysUsable: (now, n) => ({
    certificate: certificate('due', now - 70 * DAY, now + 20 * DAY, n),
    failure: { attempts: 6, nextAttemptAt: now - MIN, failingSince: now - 4 * DAY, lastError: { type: 'IssuanceError', message: 'stored failure', at: now - 6 * 60 * MIN } },
  }),
};

/** FLOOR_ORDERS orders within the last hours: the floor holds for about 22 h more. */
function floorOrders(now: number): number[] {
  return Array.from({ length: FLOOR_ORDERS }, (_, i) => now - (2 * 60 - i) * MIN);
}

const ATTEMPT_ERRORS: Record<string, (now: number) => unknown> = {
  refused: () => withError('the CA said no', { name: 'IssuanceError', code: 'ERR_ISSUANCE' }),
  // The CA's Retry-After, longer and shorter than the backoff (a floor, never a ceiling).
  retryAfterLong: (now) => withError('rate limited', { name: 'AcmeRateLimitedError', code: 'ERR_ACME', retryAfter: now + 3 * 60 * MIN }),
  retryAfterShort: (now) => withError('slow down', { name: 'AcmeRateLimitedError', code: 'ERR_ACME', retryAfter: now + 1000 }),
  issuerRetryAfter: (now) => withError('every issuer refused', { name: 'IssuanceError', code: 'ERR_ISSUANCE', issuerRetryAfter: { primary: now + 60 * MIN } }),
  // Our storage failing during the attempt is not the CA's verdict.
  storage: () => new StorageError('storage down'),
  storageTimeout: () => withError('storage timed out', { name: 'StorageTimeoutError', code: 'ERR_STORAGE_TIMEOUT' }),
  // The attempt placed orders before it failed (a refusal after ordering, an unusable certificate): they count.
  refusedAfterOrder: () => withOrdersPlaced(new IssuanceError('the order was refused'), 1),
  unusable: () => withOrdersPlaced(new UnusableCertificateError('issuer returned an expired certificate', 'expired'), 1),
  // The cluster's record says the floor holds (another process's orders): wait for it, uncounted.
  clusterFloor: (now) => new IssuanceFloorError('spec.localhost', FLOOR_ORDERS, DAY, now + 2 * 60 * MIN),
};

const CHANGES: Record<string, (now: number, spec: LifecycleSpec) => CertificateMeta> = {
  newer: (now, s) => certificate('changed', now, now + 90 * DAY, s.facts.name),
  same: (now, s) => s.facts.certificate ?? certificate('changed', now, now + 90 * DAY, s.facts.name),
  expired: (now, s) => certificate('changed-expired', now - 90 * DAY, now - 1, s.facts.name),
  expiringNow: (now, s) => certificate('changed-now', now - 90 * DAY, now, s.facts.name),
  // Stored by a writer whose clock runs an hour ahead: not usable yet, changes nothing.
  notYetValid: (now, s) => certificate('changed-future', now + 60 * MIN, now + 90 * DAY, s.facts.name),
  olderStillValid: (now, s) => certificate('changed-older', now - 89 * DAY, now + DAY, s.facts.name),
};

/** Every event a name can see, whatever its state (the outcomes only while their effect is in flight). */
export function alphabet(spec: LifecycleSpec): PathEvent[] {
  const events: PathEvent[] = [];
  const inFlight = spec.inFlight();
  if (inFlight === 'load') {
    for (const [label, loaded] of Object.entries(LOADS)) events.push({ label: `load:${label}`, make: (s, now) => ({ kind: 'load.done', loaded: loaded(now, s.facts.name, s.facts.pauseAfterMs) }) });
    events.push({ label: 'load:error', make: () => ({ kind: 'load.error', error: new StorageError('storage down') }) });
  }
  if (inFlight === 'attempt') {
    events.push({ label: 'attempt:issued', make: (s, now) => ({ kind: 'attempt.done', certificate: certificate('issued', now, now + 90 * DAY, s.facts.name), adopted: false }) });
    events.push({ label: 'attempt:adopted', make: (s, now) => ({ kind: 'attempt.done', certificate: certificate('adopted', now - MIN, now + 90 * DAY, s.facts.name), adopted: true }) });
    // The first issuer failed after ordering, the fallback issued: two orders.
    events.push({ label: 'attempt:issuedByFallback', make: (s, now) => ({ kind: 'attempt.done', certificate: certificate('issued', now, now + 90 * DAY, s.facts.name), adopted: false, ordered: 2 }) });
    for (const [label, error] of Object.entries(ATTEMPT_ERRORS)) events.push({ label: `attempt:${label}`, make: (_, now) => ({ kind: 'attempt.error', error: error(now) }) });
  }
  const next = spec.nextTimer();
  if (next) events.push({ label: `timer:${next.timer}`, make: (s) => ({ kind: 'timer', timer: s.nextTimer()!.timer }) });
  events.push({ label: 'FORCE_RENEW', make: () => ({ kind: 'FORCE_RENEW' }) });
  for (const [label, change] of Object.entries(CHANGES)) events.push({ label: `changed:${label}`, make: (s, now) => ({ kind: 'STORAGE_CHANGED', certificate: change(now, s) }) });
  events.push({ label: 'ari:early', make: (_, now) => ({ kind: 'RENEWAL_INFO', renewAt: now + MIN }) });
  events.push({ label: 'ari:late', make: (_, now) => ({ kind: 'RENEWAL_INFO', renewAt: now + 400 * DAY }) });
  // "Renew now": a window in the past, honoured once per certificate.
  events.push({ label: 'ari:past', make: (_, now) => ({ kind: 'RENEWAL_INFO', renewAt: now - 60 * MIN }) });
  events.push({ label: 'RESUME', make: () => ({ kind: 'RESUME' }) });
  events.push({ label: 'STOP', make: () => ({ kind: 'STOP' }) });
  return events;
}

/** When an event happens: a timer at its due time, anything else now. */
export function timeOf(spec: LifecycleSpec, event: SpecEvent, now: number): number {
  return event.kind === 'timer' ? Math.max(now, spec.nextTimer()!.at) : now;
}

/** The facts a path's future depends on: equal keys are one vertex of the search. */
function key(spec: LifecycleSpec, now: number): string {
  const f = spec.facts;
  const cert = f.certificate === undefined ? 'none' : now < f.certificate.notAfter ? 'usable' : 'expired';
  return JSON.stringify([
    spec.state,
    cert,
    f.certificate?.fingerprint.split('#')[0],
    f.renewAt !== undefined && now >= f.renewAt,
    f.nextAttemptAt !== undefined && now < f.nextAttemptAt,
    Math.min(f.attempts, 2),
    f.forced,
    spec.heldOperators > 0,
    f.lastError?.code ?? f.lastError?.type,
    f.lastError?.issuerRetryAfter !== undefined,
    spec.armed.map((t) => t.timer).sort(),
    spec.nextTimer()?.timer,
    specFloorUntil(f.orders, now) !== undefined,
    f.orders !== undefined && f.orders.length > 0,
    f.ariNowFor !== undefined && f.ariNowFor === f.certificate?.fingerprint,
    f.failingSince !== undefined && f.pauseAfterMs !== undefined && now - f.failingSince >= f.pauseAfterMs,
  ]);
}

export interface SpecPath {
  events: PathEvent[];
  /** The indexes of the spec's rows this path walks (its last event's row, for coverage). */
  rows: number[];
}

/**
 * One path per edge of the spec's graph, breadth first from a name being
 * read, vertices up to `maxDepth` events deep.
 */
export function specPaths(name: string, serveExpired: boolean, maxDepth = 5, pauseAfterMs?: number): SpecPath[] {
  const half = () => 0.5;
  const start = new LifecycleSpec(name, serveExpired, half, pauseAfterMs);
  const T0 = Date.UTC(2026, 0, 1);
  const seen = new Set([key(start, T0)]);
  const queue: Array<{ spec: LifecycleSpec; now: number; events: PathEvent[] }> = [{ spec: start, now: T0, events: [] }];
  const paths: SpecPath[] = [];
  while (queue.length > 0) {
    const { spec, now, events } = queue.shift()!;
    for (const event of alphabet(spec)) {
      const next = spec.clone(half);
      const made = event.make(next, now);
      const at = timeOf(next, made, now);
      const effects = next.step(made, at);
      const path = [...events, event];
      paths.push({ events: path, rows: effects.row === undefined ? [] : [effects.row] });
      if (made.kind === 'STOP' || path.length >= maxDepth) continue;
      const k = key(next, at);
      if (seen.has(k)) continue;
      seen.add(k);
      queue.push({ spec: next, now: at, events: path });
    }
  }
  return paths;
}

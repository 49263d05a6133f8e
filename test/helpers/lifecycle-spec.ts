/**
 * The lifecycle's specification as data: an oracle for the model-based tests
 * that does NOT come from the chart. Written from ARCHITECTURE.md's state
 * table ("States, tags and events") and the invariants' numbers (backoff,
 * renewal time, storage retry), it says for a state, an event and the facts
 * the guards read: the next state, what a handshake gets there, what is
 * emitted (with its payload), what is persisted, which operator replies are
 * released, and which timers are armed (at what time) or cancelled.
 *
 * The tests run this beside the real machine (test/oracle.test.ts: actor
 * level, every step; test/model.test.ts: the engine) and fail on any
 * disagreement, so a changed transition, guard, timer or payload in
 * src/machines is seen even though the paths come from the machine.
 *
 * ## How to extend (new states, guards, events)
 * - A new resting state: add it to `SpecState` and a row to `STATES` (its
 *   answer, its timers, what its entry releases). A compound state's children
 *   are `parent.child`; the parent's own row holds what its entry does and the
 *   timers shared by its children; `choose` says which child is entered.
 * - A new event: add it to `SpecEvent`, then rows to `TRANSITIONS`.
 * - A new guard: a function of `Facts` in `GUARDS`, named in a row's `when`.
 *   Rows are tried in order; the first whose `from` matches the state (a
 *   leaf, its parent, or `*`) and whose `when` holds wins; no row = the event
 *   is ignored (the spec says so: the test then expects no change at all).
 * - A new context value: add it to `Facts` and an `Update` that computes it
 *   from the event and the clock (with at most ONE random draw per update, so
 *   the oracle and the chart consume the same seeded sequence).
 * - A transient decision (like `routing`): a function in `ROUTES` returning a
 *   state (and the updates that decision makes on the way), used as a row's
 *   `to: { route: name }`.
 *
 * Never hammer a CA (issue 15, ARCHITECTURE.md "Never hammer a CA, on the
 * success path too") is in `Facts.orders` (the name's recent orders), the
 * `floor*` numbers, `routing`'s floor branch and the `recordFloor` update;
 * on-demand pausing (issue 15 item 5, ARCHITECTURE.md "`paused`") in
 * `Facts.failingSince`/`pauseAfterMs`, the `paused` state and `RESUME`.
 */
import { IssuanceFloorError, isStorageFault, toErrorInfo } from '../../src/errors.js';
// How an attempt's error says how many orders it placed (the attempt's side of the interface, not a decision).
import { ordersPlacedBy } from '../../src/machines/floor.js';
import type { CertificateMeta, ErrorInfo } from '../../src/types.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

// ─── Vocabulary ────────────────────────────────────────────────────────────

export type SpecState =
  | 'loading'
  | 'attempting.obtaining'
  | 'attempting.renewing'
  | 'attempting.expired-renewing'
  | 'valid'
  | 'failed-backoff.serving'
  | 'failed-backoff.serving-expired'
  | 'failed-backoff.refusing'
  | 'storage-unreadable'
  | 'paused'
  | 'stopped';

/** What a handshake gets in a state: at once (certificate, expired certificate, refusal) or held. */
export type SpecAnswer = 'certificate' | 'expired-certificate' | 'refusal' | 'held' | 'stopped';
export type TimerKind = 'renewal' | 'expiry' | 'nextAttempt';
/** The chart's named delays, as ARCHITECTURE.md lists them, and the timer each one is. */
export const DELAY_TIMERS: Record<string, TimerKind> = { untilRenewal: 'renewal', untilExpiry: 'expiry', untilNextAttempt: 'nextAttempt' };

/** A stored failure record: the failure, the floor's orders, the failing streak's start. */
export interface FailureFacts {
  attempts: number;
  lastError?: ErrorInfo;
  nextAttemptAt?: number;
  orders?: number[];
  failingSince?: number;
}

export interface LoadedRecord {
  certificate?: CertificateMeta;
  failure?: FailureFacts;
  renewAt?: number;
}

export type SpecEvent =
  | { kind: 'load.done'; loaded: LoadedRecord }
  | { kind: 'load.error'; error: unknown }
  /** `ordered`: the orders the attempt placed (fallback issuers: more than one); absent: one unless adopted. */
  | { kind: 'attempt.done'; certificate: CertificateMeta; adopted: boolean; ordered?: number }
  | { kind: 'attempt.error'; error: unknown }
  | { kind: 'timer'; timer: TimerKind }
  | { kind: 'FORCE_RENEW' }
  | { kind: 'STORAGE_CHANGED'; certificate: CertificateMeta }
  | { kind: 'RENEWAL_INFO'; renewAt: number }
  /** A handshake for a paused name whose permission the engine just asked afresh, and got. */
  | { kind: 'RESUME' }
  | { kind: 'STOP' };

/** The facts the spec keeps about a name (its own view; never read from the chart). */
export interface Facts {
  name: string;
  serveExpired: boolean;
  certificate?: CertificateMeta;
  renewAt?: number;
  attempts: number;
  lastError?: ErrorInfo;
  nextAttemptAt?: number;
  attemptSeq: number;
  forced: boolean;
  /** The name's recent orders (issuer calls that reached a CA), oldest first: the issuance floor's window. */
  orders?: number[];
  /** The certificate whose ARI "renew now" (a window in the past) was honoured: once per certificate. */
  ariNowFor?: string;
  /** Since when the name has been failing (the first failure since its last certificate). */
  failingSince?: number;
  /** On-demand names pause after failing this long with nothing to serve; managed names: undefined, never. */
  pauseAfterMs?: number;
}

export type Emitted =
  | { type: 'cert_obtaining'; name: string; reason: 'obtain' | 'renew' | 'expired'; attempt: number; forced: boolean; floorBypassed: boolean }
  | { type: 'cert_obtained'; name: string; certificate: CertificateMeta; adopted: boolean }
  | { type: 'cert_renewed'; name: string; certificate: CertificateMeta; previous: CertificateMeta; adopted: boolean }
  | { type: 'cert_failed'; name: string; error: ErrorInfo; attempts: number; nextAttemptAt: number }
  | { type: 'cert_expired'; name: string; certificate: CertificateMeta };

export type HandshakeOutcome = { ok: true; fingerprint: string; expired: boolean } | { ok: false; error: ErrorInfo; nextAttemptAt?: number } | { ok: false; stopped: true };
export type OperatorOutcome = { ok: true; certificate: CertificateMeta } | { ok: false; error: ErrorInfo; nextAttemptAt?: number } | { ok: false; stopped: true };

/** The error a name refuses with when nothing was recorded (a stored backoff without its error). */
export const DEFAULT_REFUSAL: ErrorInfo = { type: 'CertificateUnavailableError', message: 'no certificate', at: 0 };

// ─── The numbers (ARCHITECTURE.md, invariants 3 and 5) ─────────────────────

/** Renewal: at 2/3 of the lifetime, 1/2 below 10 days, minus up to 5 % of the lifetime at random. */
export function specRenewalTime(cert: Pick<CertificateMeta, 'notBefore' | 'notAfter'>, r: number): number {
  const lifetime = cert.notAfter - cert.notBefore;
  const ratio = lifetime < 10 * DAY ? 1 / 2 : 2 / 3;
  return Math.round(cert.notBefore + lifetime * ratio - lifetime * 0.05 * r);
}

/** Backoff after the n-th consecutive failure: 1 min × 10^(n−1), capped at 6 h, ±20 % jitter; the CA's Retry-After as a floor. */
export function specNextAttempt(now: number, failures: number, r: number, retryAfter?: number): number {
  const base = Math.min(6 * HOUR, MINUTE * 10 ** (failures - 1));
  const at = Math.round(now + base * (0.8 + 0.4 * r));
  return retryAfter !== undefined && retryAfter > at ? retryAfter : at;
}

/** Our storage failing: read (or try) again in 5 s ±20 %, never counted. */
export const specStorageRetry = (now: number, r: number) => now + Math.round(5000 * (0.8 + 0.4 * r));

// ─── The issuance floor (ARCHITECTURE.md, "Never hammer a CA"; the defaults) ─

/** At most this many orders per name within the window… */
export const FLOOR_ORDERS = 10;
export const FLOOR_WINDOW_MS = DAY;
/** …no renewal sooner than this after an order… */
export const MIN_RENEWAL_INTERVAL_MS = 10 * MINUTE;
/** …and a certificate whose notBefore is further ahead than this is not valid yet (counts as none). */
export const CLOCK_SKEW_MS = 5 * MINUTE;

/** The orders still inside the window at `now`, oldest first. */
export const specRecentOrders = (orders: readonly number[] | undefined, now: number): number[] => (orders ?? []).filter((at) => at > now - FLOOR_WINDOW_MS).sort((a, b) => a - b);
/** The recent orders and `count` more at `now`; undefined when none. */
function ordersAfter(orders: readonly number[] | undefined, count: number, now: number): number[] | undefined {
  const all = [...specRecentOrders(orders, now), ...Array.from({ length: count }, () => now)];
  return all.length > 0 ? all : undefined;
}
/** When the floor lets an order be placed, if it holds now: the oldest of the last FLOOR_ORDERS orders leaves the window. */
export function specFloorUntil(orders: readonly number[] | undefined, now: number): number | undefined {
  const recent = specRecentOrders(orders, now);
  return recent.length >= FLOOR_ORDERS ? recent[recent.length - FLOOR_ORDERS]! + FLOOR_WINDOW_MS : undefined;
}
/** A renewal time, never sooner than MIN_RENEWAL_INTERVAL_MS after the last order. */
const floored = (renewAt: number, orders: readonly number[] | undefined) =>
  orders && orders.length > 0 ? Math.max(renewAt, Math.max(...orders) + MIN_RENEWAL_INTERVAL_MS) : renewAt;
const notYetValid = (cert: CertificateMeta, now: number) => cert.notBefore > now + CLOCK_SKEW_MS;

// ─── States ────────────────────────────────────────────────────────────────

type Node = SpecState | 'attempting' | 'failed-backoff';
interface StateRow {
  /** What a handshake gets (leaves only). */
  answer?: SpecAnswer;
  /** Timers armed on entry to this node, cancelled on leaving it. */
  timers?: TimerKind[];
  /** Held handshakes answered on entry, with this state's answer. */
  releasesHandshakes?: boolean;
  /** Held operators answered on entry: with the certificate, the recorded error, or `stopped`. */
  releasesOperators?: 'certificate' | 'error' | 'stopped';
  /** The failure record written on entry. */
  persists?: boolean;
  /** Entering this node starts an attempt (counted, `cert_obtaining` emitted, `forced` and the backoff consumed). */
  startsAttempt?: boolean;
  /** The effect in flight while in this node, whose outcome is an event (`load.*`, `attempt.*`). */
  invokes?: 'load' | 'attempt';
}

export const STATES: Record<Node, StateRow> = {
  loading: { answer: 'held', invokes: 'load' },
  attempting: { startsAttempt: true, invokes: 'attempt' },
  'attempting.obtaining': { answer: 'held' },
  'attempting.renewing': { answer: 'certificate', timers: ['expiry'], releasesHandshakes: true },
  'attempting.expired-renewing': { answer: 'held' },
  valid: { answer: 'certificate', timers: ['renewal', 'expiry'], releasesHandshakes: true, releasesOperators: 'certificate' },
  'failed-backoff': { timers: ['nextAttempt'], releasesOperators: 'error', persists: true },
  'failed-backoff.serving': { answer: 'certificate', timers: ['expiry'], releasesHandshakes: true },
  'failed-backoff.serving-expired': { answer: 'expired-certificate', releasesHandshakes: true },
  'failed-backoff.refusing': { answer: 'refusal', releasesHandshakes: true },
  'storage-unreadable': { answer: 'refusal', timers: ['nextAttempt'], releasesHandshakes: true, releasesOperators: 'error' },
  // No timer at all: only an operator, a RESUME, another certificate or stop move it.
  paused: { answer: 'refusal', releasesHandshakes: true },
  stopped: { answer: 'stopped', releasesHandshakes: true, releasesOperators: 'stopped' },
};

// ─── Guards and transient decisions ────────────────────────────────────────

type Guard = (f: Facts, now: number, event: SpecEvent) => boolean;
export const GUARDS: Record<'usable' | 'hasCertificate' | 'serveExpired' | 'anotherUsableCertificate' | 'acceptsRenewalInfo' | 'paused', Guard> = {
  usable: (f, now) => f.certificate !== undefined && now < f.certificate.notAfter,
  hasCertificate: (f) => f.certificate !== undefined,
  serveExpired: (f) => f.serveExpired,
  /** Storage holds another certificate that is usable: valid already (within the clock skew), not expired (by identity, not by notAfter). */
  anotherUsableCertificate: (f, now, e) =>
    e.kind === 'STORAGE_CHANGED' && e.certificate.fingerprint !== f.certificate?.fingerprint && now < e.certificate.notAfter && !notYetValid(e.certificate, now),
  /** An ARI window in the future always; one in the past ("renew now") once per certificate. */
  acceptsRenewalInfo: (f, now, e) => e.kind === 'RENEWAL_INFO' && (e.renewAt > now || f.ariNowFor !== f.certificate?.fingerprint),
  /** Failing for pauseAfterMs (on-demand names only) with no usable certificate. */
  paused: (f, now) => f.pauseAfterMs !== undefined && f.failingSince !== undefined && now - f.failingSince >= f.pauseAfterMs && !GUARDS.usable(f, now, { kind: 'STOP' }),
};

export const ROUTES = {
  /**
   * `routing`: forced → attempt; usable and not due → valid; paused → paused; backoff pending →
   * failed-backoff; the floor holds → failed-backoff (recording the floor's error); else attempt.
   */
  routing(f: Facts, now: number): Node | { to: Node; do: Update[] } {
    if (f.forced) return 'attempting';
    if (GUARDS.usable(f, now, { kind: 'STOP' }) && !(f.renewAt !== undefined && now >= f.renewAt)) return 'valid';
    if (GUARDS.paused(f, now, { kind: 'STOP' })) return 'paused';
    if (f.nextAttemptAt !== undefined && now < f.nextAttemptAt) return 'failed-backoff';
    if (specFloorUntil(f.orders, now) !== undefined) return { to: 'failed-backoff', do: ['recordFloor'] };
    return 'attempting';
  },
};

/** Which child a compound state is entered in, by the certificate in hand. */
function choose(node: Node, f: Facts, now: number): SpecState {
  const usable = f.certificate !== undefined && now < f.certificate.notAfter;
  if (node === 'attempting') return usable ? 'attempting.renewing' : f.certificate ? 'attempting.expired-renewing' : 'attempting.obtaining';
  if (node === 'failed-backoff') return usable ? 'failed-backoff.serving' : f.certificate && f.serveExpired ? 'failed-backoff.serving-expired' : 'failed-backoff.refusing';
  return node;
}

// ─── Context updates ───────────────────────────────────────────────────────

type Update = 'adoptStored' | 'storageFailure' | 'recordFailure' | 'recordFloor' | 'adoptIssued' | 'adoptChanged' | 'setRenewAt' | 'markForced' | 'holdOperator' | 'holdHandshake' | 'emitIssued' | 'emitFailed' | 'emitExpired';

// ─── Transitions (ARCHITECTURE.md's table, row by row) ─────────────────────

interface Row {
  from: Node | '*';
  on: SpecEvent['kind'] | `timer.${TimerKind}`;
  when?: keyof typeof GUARDS;
  do?: Update[];
  /** A state (a compound one is entered by `choose`), or a transient decision; absent: stays (no re-entry). */
  to?: Node | { route: keyof typeof ROUTES };
}

export const TRANSITIONS: Row[] = [
  { from: 'loading', on: 'load.done', do: ['adoptStored'], to: { route: 'routing' } },
  { from: 'loading', on: 'load.error', do: ['storageFailure'], to: 'storage-unreadable' },
  // The operator's attempt starts once storage is read.
  { from: 'loading', on: 'FORCE_RENEW', do: ['holdOperator', 'markForced'] },
  { from: 'attempting', on: 'attempt.done', do: ['emitIssued', 'adoptIssued'], to: 'valid' },
  { from: 'attempting', on: 'attempt.error', do: ['recordFailure', 'emitFailed'], to: 'failed-backoff' },
  // An operator joins the attempt in flight.
  { from: 'attempting', on: 'FORCE_RENEW', do: ['holdOperator'] },
  { from: 'attempting.renewing', on: 'timer.expiry', do: ['emitExpired'], to: 'attempting.expired-renewing' },
  { from: 'valid', on: 'timer.renewal', to: { route: 'routing' } },
  { from: 'valid', on: 'timer.expiry', do: ['emitExpired'], to: { route: 'routing' } },
  // An operator's attempt bypasses the floor (and backoff): said in cert_obtaining.
  { from: 'valid', on: 'FORCE_RENEW', do: ['holdOperator', 'markForced'], to: 'attempting' },
  { from: 'valid', on: 'RENEWAL_INFO', when: 'acceptsRenewalInfo', do: ['setRenewAt'], to: 'valid' },
  { from: 'valid', on: 'STORAGE_CHANGED', when: 'anotherUsableCertificate', do: ['adoptChanged'], to: 'valid' },
  { from: 'failed-backoff', on: 'timer.nextAttempt', to: { route: 'routing' } },
  { from: 'failed-backoff', on: 'FORCE_RENEW', do: ['holdOperator', 'markForced'], to: 'attempting' },
  { from: 'failed-backoff', on: 'STORAGE_CHANGED', when: 'anotherUsableCertificate', do: ['adoptChanged'], to: 'valid' },
  { from: 'failed-backoff.serving', on: 'timer.expiry', when: 'serveExpired', do: ['emitExpired'], to: 'failed-backoff.serving-expired' },
  { from: 'failed-backoff.serving', on: 'timer.expiry', do: ['emitExpired'], to: 'failed-backoff.refusing' },
  { from: 'storage-unreadable', on: 'timer.nextAttempt', to: 'loading' },
  // Read again now, then start the attempt the operator asked for.
  { from: 'storage-unreadable', on: 'FORCE_RENEW', do: ['holdOperator', 'markForced'], to: 'loading' },
  // Paused: one attempt for a handshake allowed afresh (held for it), or for an operator.
  { from: 'paused', on: 'RESUME', do: ['holdHandshake'], to: 'attempting' },
  { from: 'paused', on: 'FORCE_RENEW', do: ['holdOperator', 'markForced'], to: 'attempting' },
  { from: 'paused', on: 'STORAGE_CHANGED', when: 'anotherUsableCertificate', do: ['adoptChanged'], to: 'valid' },
  { from: '*', on: 'STOP', to: 'stopped' },
];

// ─── Running the spec ──────────────────────────────────────────────────────

export interface ArmedTimer {
  timer: TimerKind;
  node: Node;
  at: number;
}

/** What one event did, by the spec. */
export interface SpecEffects {
  /** Whether some row handled the event (false: nothing at all changes). */
  handled: boolean;
  /** The index in `TRANSITIONS` of the row that did. */
  row?: number;
  emitted: Emitted[];
  /** The answer held handshakes were released with, if they were. */
  releasedHandshakes?: HandshakeOutcome;
  /** The outcome held operators were released with, if they were. */
  releasedOperators?: OperatorOutcome;
  /** Failure records written. */
  persisted: FailureFacts[];
  /** The handshake the event carried (a RESUME's) is held, for the outcome of the attempt it starts. */
  heldHandshake?: true;
  /** The attempt started, with why (and the per-issuer Retry-After, the recent orders and the operator's request carried into it). */
  attemptStarted?: { reason: 'obtain' | 'renew' | 'expired'; issuerRetryAfter?: Record<string, number>; orders?: number[]; forced?: true };
}

const parentOf = (s: SpecState): Node | undefined => (s.includes('.') ? (s.split('.')[0] as Node) : undefined);
const nodesOf = (s: SpecState): Node[] => [...(parentOf(s) ? [parentOf(s)!] : []), s];

/** The spec, run: feed it the events a name sees, with the clock's time and the source of randomness both sides share. */
export class LifecycleSpec {
  state: SpecState = 'loading';
  facts: Facts;
  armed: ArmedTimer[] = [];
  /** Handshakes and operators waiting (counted; the tests hold the replies). */
  heldOperators = 0;

  /** `pauseAfterMs`: an on-demand name's (it may pause); absent for a managed name. */
  constructor(
    name: string,
    serveExpired: boolean,
    private readonly random: () => number,
    pauseAfterMs?: number,
  ) {
    this.facts = { name, serveExpired, attempts: 0, attemptSeq: 0, forced: false, ...(pauseAfterMs !== undefined ? { pauseAfterMs } : {}) };
  }

  /** A copy that can be stepped on its own (the path search explores from copies). */
  clone(random: () => number): LifecycleSpec {
    const copy = new LifecycleSpec(this.facts.name, this.facts.serveExpired, random, this.facts.pauseAfterMs);
    copy.state = this.state;
    copy.facts = { ...this.facts };
    copy.armed = this.armed.map((t) => ({ ...t }));
    copy.heldOperators = this.heldOperators;
    return copy;
  }

  /** The effect in flight now, by the spec (its outcome is the next `load.*` or `attempt.*` event). */
  inFlight(): 'load' | 'attempt' | undefined {
    return nodesOf(this.state)
      .map((n) => STATES[n].invokes)
      .find((x) => x !== undefined);
  }

  /** What a handshake gets now, and the outcome it is answered with when at once. */
  answer(now: number): { kind: SpecAnswer; outcome?: HandshakeOutcome } {
    const kind = STATES[this.state].answer!;
    if (kind === 'certificate' && !GUARDS.usable(this.facts, now, { kind: 'STOP' })) return { kind: 'held' }; // after expiry, before the expiry timer moved on
    return { kind, outcome: kind === 'held' ? undefined : this.outcome(kind) };
  }

  /** The earliest armed timer (ties: in arming order). */
  nextTimer(): ArmedTimer | undefined {
    return this.armed.reduce<ArmedTimer | undefined>((a, t) => (a === undefined || t.at < a.at ? t : a), undefined);
  }

  /** Feed one event at `now` (for a timer, `now` is its due time). */
  step(event: SpecEvent, now: number): SpecEffects {
    const on = event.kind === 'timer' ? (`timer.${event.timer}` as const) : event.kind;
    const effects: SpecEffects = { handled: false, emitted: [], persisted: [] };
    if (this.state === 'stopped') return effects;
    const nodes = nodesOf(this.state);
    const index = TRANSITIONS.findIndex((r) => r.on === on && (r.from === '*' || nodes.includes(r.from)) && (r.when === undefined || GUARDS[r.when](this.facts, now, event)));
    if (index < 0) return effects;
    const row = TRANSITIONS[index]!;
    effects.row = index;
    if (event.kind === 'timer') this.armed = this.armed.filter((t) => t.timer !== event.timer || !nodes.includes(t.node));
    effects.handled = true;
    for (const update of row.do ?? []) this.apply(update, event, now, effects);
    if (row.to === undefined) return effects;
    const routed = typeof row.to === 'string' ? row.to : ROUTES[row.to.route](this.facts, now);
    const target: Node = typeof routed === 'string' ? routed : routed.to;
    if (typeof routed !== 'string') for (const update of routed.do) this.apply(update, event, now, effects);
    // Exit: the timers of what is left are cancelled. A parent stays (and keeps its timers) only when
    // moving between its own children; a target equal to the state itself is left and re-entered.
    const parent = target.includes('.') ? parentOf(target as SpecState) : undefined;
    const stays = parent !== undefined && nodes.includes(parent);
    this.armed = this.armed.filter((t) => stays && t.node === parent);
    if (parent !== undefined && !stays) this.enter(parent, now, effects);
    this.enter(target, now, effects);
    // A compound state: its entry runs first (it may change what the choice reads), then its chosen child's.
    const leaf = STATES[target].answer === undefined ? choose(target, this.facts, now) : (target as SpecState);
    if (leaf !== target) this.enter(leaf, now, effects);
    this.state = leaf;
    return effects;
  }

  private enter(node: Node, now: number, effects: SpecEffects) {
    const row = STATES[node];
    if (row.startsAttempt) {
      const reason = this.facts.certificate === undefined ? 'obtain' : now < this.facts.certificate.notAfter ? 'renew' : 'expired';
      const issuerRetryAfter = this.facts.lastError?.issuerRetryAfter;
      const orders = specRecentOrders(this.facts.orders, now);
      const forced = this.facts.forced;
      effects.attemptStarted = { reason, ...(issuerRetryAfter ? { issuerRetryAfter } : {}), ...(orders.length > 0 ? { orders } : {}), ...(forced ? { forced: true as const } : {}) };
      // The operator's request is consumed when the attempt ends (its outcome), not here: the attempt bypasses the floor.
      this.facts = { ...this.facts, attemptSeq: this.facts.attemptSeq + 1, nextAttemptAt: undefined };
      const floorBypassed = forced && specFloorUntil(this.facts.orders, now) !== undefined;
      effects.emitted.push({ type: 'cert_obtaining', name: this.facts.name, reason, attempt: this.facts.attemptSeq, forced, floorBypassed });
    }
    if (row.releasesHandshakes) effects.releasedHandshakes = this.outcome(row.answer!);
    if (row.releasesOperators) {
      const f = this.facts;
      effects.releasedOperators =
        row.releasesOperators === 'certificate' ? { ok: true, certificate: f.certificate! } : row.releasesOperators === 'stopped' ? { ok: false, stopped: true } : this.refusal();
      this.heldOperators = 0;
    }
    if (row.persists) {
      const { attempts, lastError, nextAttemptAt, orders, failingSince } = this.facts;
      effects.persisted.push({ attempts, lastError, nextAttemptAt, ...(orders ? { orders } : {}), ...(failingSince !== undefined ? { failingSince } : {}) });
    }
    for (const timer of row.timers ?? []) {
      const at = timer === 'renewal' ? this.facts.renewAt : timer === 'expiry' ? this.facts.certificate?.notAfter : this.facts.nextAttemptAt;
      this.armed.push({ timer, node, at: Math.max(now, at ?? now) });
    }
  }

  private outcome(kind: SpecAnswer): HandshakeOutcome {
    if (kind === 'stopped') return { ok: false, stopped: true };
    if (kind === 'refusal') return this.refusal();
    return { ok: true, fingerprint: this.facts.certificate!.fingerprint, expired: kind === 'expired-certificate' };
  }

  private refusal(): { ok: false; error: ErrorInfo; nextAttemptAt?: number } {
    return { ok: false, error: this.facts.lastError ?? DEFAULT_REFUSAL, nextAttemptAt: this.facts.nextAttemptAt };
  }

  private apply(update: Update, event: SpecEvent, now: number, effects: SpecEffects) {
    const f = this.facts;
    switch (update) {
      case 'adoptStored': {
        const { certificate: stored, failure, renewAt } = (event as Extract<SpecEvent, { kind: 'load.done' }>).loaded;
        // A certificate not valid yet (a writer whose clock runs ahead) counts as none.
        const certificate = stored && !notYetValid(stored, now) ? stored : undefined;
        // The record's orders; without any, the certificate in hand stands for one order at its notBefore.
        const standsFor = certificate && certificate.notBefore <= now ? [certificate.notBefore] : undefined;
        const recent = specRecentOrders(failure?.orders ?? standsFor, now);
        const orders = recent.length > 0 ? recent : undefined;
        this.facts = {
          ...f,
          certificate,
          renewAt: certificate ? floored(renewAt ?? specRenewalTime(certificate, this.random()), orders) : undefined,
          attempts: failure?.attempts ?? f.attempts,
          lastError: failure?.lastError,
          nextAttemptAt: failure?.nextAttemptAt,
          orders,
          // A record written before the streak's start was kept: its last failure's time stands for it.
          failingSince: failure?.failingSince ?? (failure && failure.attempts > 0 ? failure.lastError?.at : undefined),
        };
        return;
      }
      case 'storageFailure': {
        const error = toErrorInfo((event as Extract<SpecEvent, { kind: 'load.error' }>).error, now);
        this.facts = { ...f, lastError: error, nextAttemptAt: specStorageRetry(now, this.random()), forced: false };
        return;
      }
      case 'recordFailure': {
        const cause = (event as Extract<SpecEvent, { kind: 'attempt.error' }>).error;
        const error = toErrorInfo(cause, now);
        // The orders the failed attempt placed count too.
        const orders = ordersAfter(f.orders, ordersPlacedBy(cause), now);
        if (isStorageFault(error.code)) this.facts = { ...f, lastError: error, nextAttemptAt: specStorageRetry(now, this.random()), orders, forced: false };
        // The cluster's floor (another process's orders): wait for it; not the CA's verdict, not counted.
        else if (error.code === 'ERR_ISSUANCE_FLOOR' && error.retryAfter !== undefined) this.facts = { ...f, lastError: error, nextAttemptAt: error.retryAfter, orders, forced: false };
        else {
          const backoff = specNextAttempt(now, f.attempts + 1, this.random(), error.retryAfter);
          const floor = specFloorUntil(orders, now);
          this.facts = {
            ...f,
            attempts: f.attempts + 1,
            lastError: error,
            nextAttemptAt: floor !== undefined && floor > backoff ? floor : backoff,
            orders,
            forced: false,
            failingSince: f.failingSince ?? now,
          };
        }
        return;
      }
      case 'recordFloor': {
        // Not a failure: nothing counted; no attempt before the floor lets one.
        const recent = specRecentOrders(f.orders, now);
        const until = specFloorUntil(f.orders, now)!;
        this.facts = { ...f, lastError: toErrorInfo(new IssuanceFloorError(f.name, recent.length, FLOOR_WINDOW_MS, until), now), nextAttemptAt: until, orders: recent };
        return;
      }
      case 'adoptIssued':
      case 'adoptChanged': {
        const e = event as Extract<SpecEvent, { kind: 'attempt.done' | 'STORAGE_CHANGED' }>;
        // An issued certificate cost at least one order; an adopted one (another process's), none of ours.
        const placed = e.kind === 'attempt.done' && !e.adopted ? Math.max(1, e.ordered ?? 1) : 0;
        const orders = ordersAfter(f.orders, placed, now);
        this.facts = {
          ...f,
          certificate: e.certificate,
          renewAt: floored(specRenewalTime(e.certificate, this.random()), orders),
          attempts: 0,
          lastError: undefined,
          nextAttemptAt: undefined,
          orders,
          forced: false,
          failingSince: undefined,
        };
        return;
      }
      case 'setRenewAt': {
        const { renewAt } = event as Extract<SpecEvent, { kind: 'RENEWAL_INFO' }>;
        this.facts = { ...f, renewAt: floored(renewAt, f.orders), ariNowFor: renewAt <= now ? f.certificate?.fingerprint : f.ariNowFor };
        return;
      }
      case 'markForced':
        this.facts = { ...f, forced: true };
        return;
      case 'holdOperator':
        this.heldOperators++;
        return;
      case 'holdHandshake':
        effects.heldHandshake = true;
        return;
      case 'emitIssued': {
        const { certificate, adopted } = event as Extract<SpecEvent, { kind: 'attempt.done' }>;
        effects.emitted.push(
          f.certificate
            ? { type: 'cert_renewed', name: f.name, certificate, previous: f.certificate, adopted }
            : { type: 'cert_obtained', name: f.name, certificate, adopted },
        );
        return;
      }
      case 'emitFailed':
        effects.emitted.push({ type: 'cert_failed', name: f.name, error: f.lastError!, attempts: f.attempts, nextAttemptAt: f.nextAttemptAt! });
        return;
      case 'emitExpired':
        effects.emitted.push({ type: 'cert_expired', name: f.name, certificate: f.certificate! });
        return;
    }
  }
}

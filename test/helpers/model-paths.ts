/**
 * Paths through the real lifecycle machine, for the model-based tests, found
 * with XState's public API only: the events a state handles from
 * `getNextTransitions`, its timers from the machine's own delayed transitions
 * (`StateNode.after`) and their due times from the machine's own delay
 * implementations. Renaming the machine, a state or a delay cannot silently
 * shrink the paths: the numbers are asserted by the test.
 */
import { createEmptyActor, getNextTransitions, type AnyStateNode } from 'xstate';
import { getShortestPaths, getSimplePaths } from 'xstate/graph';
import { StorageError } from '../../src/errors.js';
import { createCertificateMachine, type CertificateEvent, type CertificateMachine } from '../../src/machines/certificate.js';
import { defaultTimingPolicy } from '../../src/machines/policy.js';
import type { CertificateMeta } from '../../src/types.js';

export const NAME = 'model.localhost';
export const DAY = 86_400_000;
export const T0 = Date.UTC(2026, 0, 1);

/** Abstract certificates for traversal; the replay makes real ones of the same kind. */
export type CertKind = 'valid' | 'due' | 'expired';
const fakeCert = (kind: CertKind | 'fresh' | 'changed'): CertificateMeta => {
  const window = { valid: [T0 - DAY, T0 + 89 * DAY], due: [T0 - 70 * DAY, T0 + 20 * DAY], expired: [T0 - 100 * DAY, T0 - 10 * DAY], fresh: [T0, T0 + 90 * DAY], changed: [T0, T0 + 91 * DAY] }[kind];
  return { fingerprint: kind, serial: kind, names: [NAME], notBefore: window[0]!, notAfter: window[1]!, issuer: 'x', issuerId: 'x' };
};

/** A stored record: its certificate, if any, and a failure record whose backoff ends in 10 minutes (`short`) or after a due certificate expires (`long`). */
export type LoadVariant = { certificate?: CertKind; backoff?: 'short' | 'long' };
export const loadVariants: LoadVariant[] = [
  {},
  { certificate: 'valid' },
  { certificate: 'due' },
  { certificate: 'expired' },
  { backoff: 'short' },
  { certificate: 'expired', backoff: 'short' },
  { certificate: 'due', backoff: 'short' },
  { certificate: 'due', backoff: 'long' },
];
/** When a stored backoff ends, from the time the record is read. */
export const BACKOFF_MS = { short: 600_000, long: 30 * DAY } as const;

export type ModelEvent = { type: string; [k: string]: unknown };
export type ModelStep = { event: ModelEvent; state: ModelSnapshot };
export type ModelSnapshot = ReturnType<CertificateMachine['getInitialSnapshot']>;

/** Every delayed transition of the machine: its event type and the name of its delay, from the machine itself. */
export function machineTimers(machine: CertificateMachine): Map<string, string> {
  const timers = new Map<string, string>();
  const visit = (node: AnyStateNode) => {
    for (const { eventType, delay } of node.after) timers.set(eventType, String(delay));
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(machine.root);
  return timers;
}

/** When a timer of `snapshot`'s state fires, by the machine's own delay implementation (ms since epoch). */
export function timerDueAt(machine: CertificateMachine, delay: string, context: ModelSnapshot['context'], now: number): number {
  const implementation = (machine.implementations.delays as Record<string, number | ((args: { context: unknown; event: unknown }) => number)>)[delay];
  const ms = typeof implementation === 'function' ? implementation({ context, event: { type: '' } }) : Number(implementation ?? delay);
  return now + ms;
}

/** The event types `snapshot` handles (guards aside), by XState's `getNextTransitions`. */
export function handledEvents(snapshot: ModelSnapshot): Set<string> {
  return new Set(getNextTransitions(snapshot).map((t) => t.eventType));
}

const noReply = () => {};

/** The alphabet of the traversal: everything but handshakes (the replay probes those at every step). */
export function traversalEvents(machine: CertificateMachine): ModelEvent[] {
  const loadDone = loadVariants.map((v) => ({
    type: 'xstate.done.actor.load',
    output: {
      ...(v.certificate ? { certificate: fakeCert(v.certificate) } : {}),
      ...(v.backoff ? { failure: { attempts: 1, nextAttemptAt: T0 + BACKOFF_MS[v.backoff], lastError: { type: 'IssuanceError', message: 'stored failure', at: T0 - 1 } } } : {}),
    },
    variant: v,
  }));
  return [
    ...loadDone,
    { type: 'xstate.error.actor.load', error: new StorageError('storage down') },
    { type: 'xstate.done.actor.attempt', output: { certificate: fakeCert('fresh'), adopted: false } },
    { type: 'xstate.error.actor.attempt', error: new Error('scripted') },
    ...[...machineTimers(machine).keys()].map((type) => ({ type })),
    { type: 'FORCE_RENEW', reply: noReply },
    { type: 'STORAGE_CHANGED', certificate: fakeCert('changed') },
    { type: 'STOP' },
  ];
}

/**
 * The real machine, traversed with a *virtual clock per snapshot*: a timer
 * event moves that path's time to the timer's due time, so time guards
 * (usable? renewal due? backoff over?) are evaluated as they will be in the
 * replay. Without it a frozen clock makes the graph disagree with reality.
 */
export function timedLogic(serveExpired: boolean) {
  let virtualNow = T0;
  const machine = createCertificateMachine({ now: () => virtualNow, random: () => 0.5, policy: defaultTimingPolicy });
  const timers = machineTimers(machine);
  const relative = (event: ModelEvent): ModelEvent => {
    // Certificates issued or found along the path are fresh at that path's time.
    if (event.type === 'xstate.done.actor.attempt') return { ...event, output: { certificate: { ...fakeCert('fresh'), notBefore: virtualNow, notAfter: virtualNow + 90 * DAY }, adopted: false } };
    if (event.type === 'STORAGE_CHANGED') return { ...event, certificate: { ...fakeCert('changed'), fingerprint: `changed@${virtualNow}`, notBefore: virtualNow, notAfter: virtualNow + 91 * DAY } };
    return event;
  };
  const logic = Object.create(machine) as typeof machine;
  // The path's time rides in the snapshot's context (`__vt`, ignored by the machine): the graph copies snapshots.
  const timeOf = (s: ModelSnapshot) => (s.context as { __vt?: number }).__vt ?? T0;
  const stamp = (s: ModelSnapshot, at: number): ModelSnapshot => ({ ...s, context: { ...s.context, __vt: at } }) as unknown as ModelSnapshot;
  logic.getInitialSnapshot = (scope, input) => {
    virtualNow = T0;
    return stamp(machine.getInitialSnapshot(scope, { name: input?.name ?? NAME, serveExpired }), T0);
  };
  logic.transition = (snapshot, event, scope) => {
    virtualNow = timeOf(snapshot);
    const delay = timers.get(event.type);
    if (delay !== undefined) virtualNow = Math.max(virtualNow, timerDueAt(machine, delay, snapshot.context, virtualNow));
    return stamp(machine.transition(snapshot, relative(event) as CertificateEvent, scope), virtualNow);
  };
  const facets = (s: ModelSnapshot) => {
    virtualNow = timeOf(s);
    const c = s.context;
    return [
      s.value,
      c.certificate ? `${c.certificate.fingerprint.split('@')[0]}:${c.certificate.notAfter > virtualNow ? 'usable' : 'expired'}` : 'none',
      c.renewAt !== undefined && virtualNow >= c.renewAt,
      (c.nextAttemptAt ?? 0) > virtualNow,
      c.attempts > 0,
      c.forced,
      // Where the backoff ends relative to the renewal time and the expiry decides the state after it.
      c.nextAttemptAt !== undefined && c.renewAt !== undefined && c.nextAttemptAt >= c.renewAt,
      c.nextAttemptAt !== undefined && c.certificate !== undefined && c.nextAttemptAt >= c.certificate.notAfter,
    ];
  };
  /**
   * The events that can happen next in `snapshot`: those its state handles,
   * of which timers only the earliest to fire (the others cannot come first).
   */
  const enabledTypes = (snapshot: ModelSnapshot): Set<string> => {
    const handled = handledEvents(snapshot);
    virtualNow = timeOf(snapshot);
    const due = [...handled].filter((type) => timers.has(type)).map((type) => [type, timerDueAt(machine, timers.get(type)!, snapshot.context, virtualNow)] as const);
    const first = Math.min(...due.map(([, at]) => at));
    for (const [type, at] of due) if (at > first) handled.delete(type);
    return handled;
  };
  return { logic, machine, timers, enabledTypes, serializeState: (s: ModelSnapshot) => JSON.stringify(facets(s)) };
}

/**
 * Shortest paths over the whole alphabet; simple paths (which explode
 * combinatorially with every event) over two smaller ones: every timer of the
 * chart with the attempt's outcomes and storage failures, and the operator's
 * FORCE_RENEW with the attempt's outcomes, storage failures and the retries.
 */
export function modelPaths(serveExpired = false) {
  const { logic, machine, timers, enabledTypes, serializeState } = timedLogic(serveExpired);
  const all = traversalEvents(machine);
  // Offer a state only the events that can happen next: an unhandled or later timer event would still move the path's clock.
  const enabled = (alphabet: ModelEvent[]) => (state: ModelSnapshot) => {
    const types = enabledTypes(state);
    return alphabet.filter((e) => types.has(e.type)) as CertificateEvent[];
  };
  const options = { input: { name: NAME }, serializeState };
  const shortest = getShortestPaths(logic, { ...options, events: enabled(all) as never });
  const family = (types: string[], variants: number[]) => {
    const wanted = new Set(types);
    const alphabet = all.filter((e) => wanted.has(e.type) || (e.type === 'xstate.done.actor.load' && variants.includes(loadVariants.indexOf(e.variant as LoadVariant))));
    return getSimplePaths(logic, { ...options, events: enabled(alphabet) as never });
  };
  const outcomes = ['xstate.done.actor.attempt', 'xstate.error.actor.attempt', 'xstate.error.actor.load'];
  const retries = [...timers].filter(([, delay]) => delay === 'untilNextAttempt').map(([type]) => type);
  const simple = [...family([...outcomes, ...timers.keys()], [0, 1, 3, 4]), ...family([...outcomes, 'FORCE_RENEW', ...retries], [0, 1, 3])];
  return { shortest, simple, timers, machine };
}

/** Whether `event` leaves `snapshot` where it is (an operator joining the attempt in flight): the graph has no such step. */
export function isSelfLoop(snapshot: ModelSnapshot, event: ModelEvent, serveExpired = false): boolean {
  const { logic, serializeState, enabledTypes } = timedLogic(serveExpired);
  if (!enabledTypes(snapshot).has(event.type)) return false;
  const actor = createEmptyActor();
  const scope = { self: actor, system: actor.system, id: '', sessionId: 'model', logger: () => {}, defer: () => {}, emit: () => {}, stopChild: () => {}, actionExecutor: () => {} } as never;
  return serializeState(logic.transition(snapshot, event as CertificateEvent, scope)) === serializeState(snapshot);
}

/**
 * Recompute a path's states by applying its events to the real machine in
 * order, with the path's own virtual time. The graph merges snapshots with
 * equal serialisations, so the states it reports along a path can come from
 * another path through the same vertex; the event sequence is what we take
 * from it. Returns undefined when an event is not handled where it lands.
 */
export function replayEvents(events: ModelEvent[], serveExpired = false): ModelStep[] | undefined {
  const { logic, enabledTypes } = timedLogic(serveExpired);
  const actor = createEmptyActor();
  const scope = { self: actor, system: actor.system, id: '', sessionId: 'model', logger: () => {}, defer: () => {}, emit: () => {}, stopChild: () => {}, actionExecutor: () => {} } as never;
  let snapshot = logic.getInitialSnapshot(scope, { name: NAME });
  const steps: ModelStep[] = [{ event: { type: 'xstate.init' }, state: snapshot }];
  for (const event of events) {
    if (!enabledTypes(snapshot).has(event.type)) return undefined;
    snapshot = logic.transition(snapshot, event as CertificateEvent, scope);
    steps.push({ event, state: snapshot });
  }
  return steps;
}

/**
 * Paths through the real lifecycle machine, for the model-based tests.
 */
import { createEmptyActor } from 'xstate';
import { getShortestPaths, getSimplePaths } from 'xstate/graph';
import { StorageError } from '../../src/errors.js';
import { createCertificateMachine, type CertificateEvent } from '../../src/machines/certificate.js';
import { defaultTimingPolicy } from '../../src/machines/policy.js';
import type { CertificateMeta } from '../../src/types.js';

export const NAME = 'model.localhost';
export const DAY = 86_400_000;
export const T0 = Date.UTC(2026, 0, 1);

// ─── Path generation on the real machine ───────────────────────────────────

/** Abstract certificates for traversal; the replay makes real ones of the same kind. */
export type CertKind = 'valid' | 'due' | 'expired';
const fakeCert = (kind: CertKind | 'fresh' | 'changed'): CertificateMeta => {
  const window = { valid: [T0 - DAY, T0 + 89 * DAY], due: [T0 - 70 * DAY, T0 + 20 * DAY], expired: [T0 - 100 * DAY, T0 - 10 * DAY], fresh: [T0, T0 + 90 * DAY], changed: [T0, T0 + 91 * DAY] }[kind];
  return { fingerprint: kind, serial: kind, names: [NAME], notBefore: window[0]!, notAfter: window[1]!, issuer: 'x', issuerId: 'x' };
};

export type LoadVariant = { certificate?: CertKind; backoff?: boolean };
export const loadVariants: LoadVariant[] = [{}, { certificate: 'valid' }, { certificate: 'due' }, { certificate: 'expired' }, { backoff: true }, { certificate: 'expired', backoff: true }, { certificate: 'valid', backoff: true }];

export type ModelEvent = CertificateEvent | { type: string; [k: string]: unknown };

export function traversalEvents(): ModelEvent[] {
  const loadDone = loadVariants.map((v) => ({
    type: 'xstate.done.actor.load',
    output: {
      ...(v.certificate ? { certificate: fakeCert(v.certificate) } : {}),
      ...(v.backoff ? { failure: { attempts: 1, nextAttemptAt: T0 + 600_000, lastError: { type: 'IssuanceError', message: 'stored failure', at: T0 - 1 } } } : {}),
    },
    variant: v,
  }));
  return [
    ...loadDone,
    { type: 'xstate.error.actor.load', error: new StorageError('storage down') },
    { type: 'xstate.done.actor.attempt', output: { certificate: fakeCert('fresh'), adopted: false } },
    { type: 'xstate.error.actor.attempt', error: new Error('scripted') },
    { type: 'xstate.after.untilRenewal.certificate.valid' },
    { type: 'xstate.after.untilExpiry.certificate.valid' },
    { type: 'xstate.after.untilExpiry.certificate.attempting.renewing' },
    { type: 'xstate.after.untilNextAttempt.certificate.failed-backoff' },
    { type: 'xstate.after.untilNextAttempt.certificate.storage-unreadable' },
    { type: 'FORCE_RENEW' },
    { type: 'STORAGE_CHANGED', certificate: fakeCert('changed') },
    { type: 'STOP' },
  ];
}

/**
 * The real machine, traversed with a *virtual clock per snapshot*: an
 * after-event moves that path's time to the timer's due time, so time guards
 * (usable? renewal due? backoff over?) are evaluated as they will be in the
 * replay. Without it a frozen clock makes the graph disagree with reality.
 */
export function timedLogic() {
  let virtualNow = T0;
  const machine = createCertificateMachine({ now: () => virtualNow, random: () => 0.5, policy: defaultTimingPolicy });
  type Snap = ReturnType<typeof machine.getInitialSnapshot>;
  const dueTime = (snapshot: Snap, type: string): number => {
    const c = snapshot.context;
    if (type.startsWith('xstate.after.untilRenewal')) return c.renewAt ?? virtualNow;
    if (type.startsWith('xstate.after.untilExpiry')) return c.certificate?.notAfter ?? virtualNow;
    if (type.startsWith('xstate.after.untilNextAttempt')) return c.nextAttemptAt ?? virtualNow;
    return virtualNow;
  };
  const relative = (event: ModelEvent): ModelEvent => {
    // Certificates issued or found along the path are fresh at that path's time.
    if (event.type === 'xstate.done.actor.attempt') return { ...event, output: { certificate: { ...fakeCert('fresh'), notBefore: virtualNow, notAfter: virtualNow + 90 * DAY }, adopted: false } };
    if (event.type === 'STORAGE_CHANGED') return { ...event, certificate: { ...fakeCert('changed'), fingerprint: `changed@${virtualNow}`, notBefore: virtualNow, notAfter: virtualNow + 91 * DAY } };
    return event;
  };
  const logic = Object.create(machine) as typeof machine;
  // The path's time rides in the snapshot's context (`__vt`, ignored by the machine): the graph copies snapshots.
  const timeOf = (s: Snap) => (s.context as { __vt?: number }).__vt ?? T0;
  const stamp = (s: Snap, at: number): Snap => ({ ...s, context: { ...s.context, __vt: at } }) as unknown as Snap;
  logic.getInitialSnapshot = (scope, input) => {
    virtualNow = T0;
    return stamp(machine.getInitialSnapshot(scope, input), T0);
  };
  logic.transition = (snapshot, event, scope) => {
    virtualNow = Math.max(timeOf(snapshot), dueTime(snapshot, event.type));
    return stamp(machine.transition(snapshot, relative(event) as CertificateEvent, scope), virtualNow);
  };
  const facets = (s: Snap) => {
    virtualNow = timeOf(s);
    const c = s.context;
    return [
      s.value,
      c.certificate ? `${c.certificate.fingerprint.split('@')[0]}:${c.certificate.notAfter > virtualNow ? 'usable' : 'expired'}` : 'none',
      c.renewAt !== undefined && virtualNow >= c.renewAt,
      (c.nextAttemptAt ?? 0) > virtualNow,
      c.attempts > 0,
      // Where the backoff ends relative to the renewal time and the expiry decides the state after it.
      c.nextAttemptAt !== undefined && c.renewAt !== undefined && c.nextAttemptAt >= c.renewAt,
      c.nextAttemptAt !== undefined && c.certificate !== undefined && c.nextAttemptAt >= c.certificate.notAfter,
    ];
  };
  return { logic, serializeState: (s: Snap) => JSON.stringify(facets(s)) };
}

export function modelPaths() {
  const { logic, serializeState } = timedLogic();
  // Offer a state only the events it handles: an unhandled after-event would still move the path's clock.
  const enabled = (all: CertificateEvent[]) => (state: { _nodes: Array<{ ownEvents: string[] }> }) => {
    const own = new Set(state._nodes.flatMap((n) => n.ownEvents));
    return all.filter((e) => own.has(e.type));
  };
  const options = { input: { name: NAME }, events: enabled(traversalEvents() as CertificateEvent[]) as never, serializeState };
  const shortest = getShortestPaths(logic, options);
  // Simple paths explode combinatorially with every event: walk a core alphabet for them.
  const core = new Set(['xstate.done.actor.attempt', 'xstate.error.actor.attempt', 'xstate.after.untilRenewal.certificate.valid', 'xstate.after.untilExpiry.certificate.attempting.renewing', 'xstate.after.untilNextAttempt.certificate.failed-backoff', 'FORCE_RENEW']);
  const coreEvents = (traversalEvents() as CertificateEvent[]).filter((e) => core.has(e.type) || ((e.type as string) === 'xstate.done.actor.load' && [0, 1, 3, 4].includes(loadVariants.indexOf((e as unknown as { variant: LoadVariant }).variant))));
  const simple = getSimplePaths(logic, { ...options, events: enabled(coreEvents) as never });
  return { shortest, simple };
}

/**
 * Recompute a path's states by applying its events to the real machine in
 * order, with the path's own virtual time. The graph merges snapshots with
 * equal serialisations, so the states it reports along a path can come from
 * another path through the same vertex; the event sequence is what we take
 * from it. Returns undefined when an event is not enabled where it lands.
 */
export function replayEvents(events: ModelEvent[]): Array<{ event: ModelEvent; state: { value: unknown } }> | undefined {
  const { logic } = timedLogic();
  const actor = createEmptyActor();
  const scope = { self: actor, system: actor.system, id: '', sessionId: 'model', logger: () => {}, defer: () => {}, emit: () => {}, stopChild: () => {}, actionExecutor: () => {} } as never;
  let snapshot = logic.getInitialSnapshot(scope, { name: NAME });
  const steps: Array<{ event: ModelEvent; state: { value: unknown } }> = [{ event: { type: 'xstate.init' }, state: snapshot }];
  for (const event of events) {
    const own = new Set((snapshot as unknown as { _nodes: Array<{ ownEvents: string[] }> })._nodes.flatMap((n) => n.ownEvents));
    if (!own.has(event.type)) return undefined;
    snapshot = logic.transition(snapshot, event as CertificateEvent, scope);
    steps.push({ event, state: snapshot });
  }
  return steps;
}


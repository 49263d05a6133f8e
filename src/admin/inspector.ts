/**
 * A local XState inspector: an `inspect` observer (the same shape
 * `@statelyai/inspect` hands out) that keeps serialised inspection events in
 * memory and passes them to subscribers. Nothing leaves the process, so it
 * works offline, unlike Stately's viewer page.
 *
 * Records are plain JSON: actor references become their ids and functions
 * (a handshake event's reply callback) are dropped. Machine context holds
 * metadata only, so no key material can appear; the inspector test checks it.
 */
import type { InspectionEvent } from 'xstate';

/** One inspection event, serialised. */
export interface InspectionRecord {
  type: '@xstate.actor' | '@xstate.event' | '@xstate.snapshot' | '@xstate.action' | '@xstate.microstep' | string;
  /** Id of the actor concerned (`cert:example.com`, or a child like `x:12`). */
  actorId: string;
  /** Id of the root actor of its system. */
  rootId: string;
  /** Wall-clock time the inspector received it, ms. */
  at: number;
  /** `@xstate.snapshot`: the state value, status and context. */
  value?: unknown;
  status?: string;
  context?: unknown;
  /** `@xstate.event` and `@xstate.snapshot`: the event (without functions). */
  event?: { type: string; [key: string]: unknown };
  /** `@xstate.event`: who sent it, when known. */
  sourceId?: string;
}

/** Options of {@link createLocalInspector}, mirroring `@statelyai/inspect`'s. */
export interface LocalInspectorOptions {
  /** Keep only events for which this returns true (default: all). */
  filter?: (event: InspectionEvent) => boolean;
  /** Most records kept in memory, oldest dropped first (default 10,000). */
  limit?: number;
}

/** A local inspector. Pass `inspect` to `createCertEngine({ inspect })`. */
export interface LocalInspector {
  /** The observer for XState's `inspect` option. */
  readonly inspect: (event: InspectionEvent) => void;
  /** Records kept so far, oldest first (a copy). */
  records(): InspectionRecord[];
  /** Call `listener` with each new record. Returns the unsubscribe function. */
  subscribe(listener: (record: InspectionRecord) => void): () => void;
  /** Forget kept records. */
  clear(): void;
}

/** Create a local inspector. */
export function createLocalInspector(options: LocalInspectorOptions = {}): LocalInspector {
  const limit = Math.max(1, options.limit ?? 10_000);
  const kept: InspectionRecord[] = [];
  const listeners = new Set<(record: InspectionRecord) => void>();
  return {
    inspect(event) {
      if (options.filter && !options.filter(event)) return;
      const record = serializeInspectionEvent(event);
      kept.push(record);
      if (kept.length > limit) kept.splice(0, kept.length - limit);
      for (const listener of listeners) {
        try {
          listener(record);
        } catch {
          // An observer's bug must not break the actor that is being inspected.
        }
      }
    },
    records: () => [...kept],
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    clear: () => void (kept.length = 0),
  };
}

/** Serialise one inspection event to plain JSON. */
export function serializeInspectionEvent(event: InspectionEvent): InspectionRecord {
  const record: InspectionRecord = { type: event.type, actorId: actorIdOf(event.actorRef), rootId: event.rootId, at: Date.now() };
  if (event.type === '@xstate.snapshot') {
    const snapshot = event.snapshot as { value?: unknown; status?: string; context?: unknown };
    if ('value' in snapshot) record.value = toPlain(snapshot.value);
    if (snapshot.status !== undefined) record.status = snapshot.status;
    if ('context' in snapshot) record.context = toPlain(snapshot.context);
    record.event = toPlain(event.event) as InspectionRecord['event'];
  } else if (event.type === '@xstate.event') {
    record.event = toPlain(event.event) as InspectionRecord['event'];
    if (event.sourceRef) record.sourceId = actorIdOf(event.sourceRef);
  }
  return record;
}

/**
 * The id of an inspected actor (`cert:example.com` for certstate's roots).
 * XState types inspection refs as `ActorRefLike`, which does not declare `id`.
 */
export function actorIdOf(ref: unknown): string {
  const r = ref as { id?: unknown; sessionId?: unknown };
  return typeof r.id === 'string' ? r.id : typeof r.sessionId === 'string' ? r.sessionId : '';
}

/** A JSON-safe copy: functions dropped, actor refs replaced by their id, cycles cut, depth bounded. */
export function toPlain(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'function' || typeof value === 'symbol') return undefined;
    if (typeof value === 'bigint') return value.toString();
    return value;
  }
  if (seen.has(value) || depth > 12) return '[…]';
  if (isActorRef(value)) return { actorRef: value.id };
  seen.add(value);
  try {
    if (Array.isArray(value)) return value.map((v) => toPlain(v, depth + 1, seen) ?? null);
    if (value instanceof Error) return { type: value.name, message: value.message };
    if (value instanceof Date) return value.toISOString();
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const plain = toPlain(v, depth + 1, seen);
      if (plain !== undefined) out[k] = plain;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

function isActorRef(value: object): value is { id: string } {
  const v = value as { id?: unknown; send?: unknown; getSnapshot?: unknown };
  return typeof v.id === 'string' && typeof v.send === 'function' && typeof v.getSnapshot === 'function';
}

/**
 * A plain-data view of a statechart's structure (states and transitions),
 * read from a machine's `root` state node. Diagrams are drawn from this, not
 * from a hand-written list, so they stay true to the real chart.
 */
import type { AnyStateMachine } from 'xstate';

/** One state of the chart. `id` is its path below the root, dot-separated (`attempting.renewing`). */
export interface ChartState {
  id: string;
  /** The state's own key (`renewing`). */
  key: string;
  /** Parent state id; `''` for top-level states. */
  parent: string;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** Child state ids, in definition order. */
  children: string[];
  /** Id of the initial child, for compound states. */
  initial?: string;
  /** Ids of actors invoked while in this state. */
  invokes: string[];
  /** True when the state only routes (every way out is an eventless `always` transition). */
  transient: boolean;
}

/** One transition with a target (action-only transitions are left out: they do not change state). */
export interface ChartTransition {
  /** Source state id; `''` for a transition defined on the root (taken from any state). */
  source: string;
  target: string;
  kind: 'event' | 'always' | 'after' | 'done' | 'error';
  /** Human-readable trigger: an event type, `after untilRenewal`, `attempt done`, `attempt error`, or `''` for `always`. */
  trigger: string;
  /** Human-readable guard, e.g. `hasUsableCertificate and not renewalDue`. */
  guard?: string;
  /** Re-entering the same state (a self-transition that restarts its timers). */
  reenter: boolean;
}

/** The whole chart. */
export interface Chart {
  /** The machine's id (`certificate`). */
  id: string;
  /** Id of the root's initial state. */
  initial?: string;
  states: ChartState[];
  transitions: ChartTransition[];
}

// Structural views of XState's StateNode: only what we read, so the walker
// does not depend on XState's deep generic types.
interface NodeView {
  key: string;
  path: string[];
  type: ChartState['type'];
  states: Record<string, NodeView>;
  transitions: Map<string, TransitionView[]>;
  always?: TransitionView[];
  after: Array<{ delay: unknown; eventType: string }>;
  invoke: Array<{ id: string }>;
  initial?: { target: NodeView[] };
}
interface TransitionView {
  target?: NodeView[];
  guard?: unknown;
  reenter?: boolean;
}

const DONE = /^xstate\.done\.actor\.(.+)$/;
const ERROR = /^xstate\.error\.actor\.(.+)$/;

/** Read the structure of `machine` (e.g. `certificateMachine`). */
export function readChart(machine: AnyStateMachine): Chart {
  const root = machine.root as unknown as NodeView;
  const states: ChartState[] = [];
  const transitions: ChartTransition[] = [];
  const idOf = (node: NodeView) => node.path.join('.');

  const visit = (node: NodeView) => {
    const source = idOf(node);
    const delays = new Map(node.after.map((a) => [a.eventType, delayName(a.delay)]));
    for (const [eventType, list] of node.transitions) {
      for (const t of list) {
        if (!t.target?.length) continue;
        const { kind, trigger } = describeEvent(eventType, delays);
        for (const target of t.target) {
          transitions.push({ source, target: idOf(target), kind, trigger, ...guardField(t.guard), reenter: t.reenter === true });
        }
      }
    }
    for (const t of node.always ?? []) {
      for (const target of t.target ?? []) {
        transitions.push({ source, target: idOf(target), kind: 'always', trigger: '', ...guardField(t.guard), reenter: false });
      }
    }
    if (node !== root) {
      const children = Object.values(node.states);
      const hasEventExits = [...node.transitions.values()].some((list) => list.some((t) => t.target?.length));
      states.push({
        id: source,
        key: node.key,
        parent: node.path.slice(0, -1).join('.'),
        type: node.type,
        children: children.map(idOf),
        ...(node.initial?.target?.[0] ? { initial: idOf(node.initial.target[0]) } : {}),
        invokes: node.invoke.map((i) => i.id),
        transient: (node.always?.length ?? 0) > 0 && !hasEventExits,
      });
    }
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(root);
  const initial = root.initial?.target?.[0];
  return { id: root.key, ...(initial ? { initial: idOf(initial) } : {}), states, transitions };
}

function describeEvent(eventType: string, delays: Map<string, string>): Pick<ChartTransition, 'kind' | 'trigger'> {
  const delay = delays.get(eventType);
  if (delay !== undefined) return { kind: 'after', trigger: `after ${delay}` };
  const done = DONE.exec(eventType);
  if (done) return { kind: 'done', trigger: `${done[1]} done` };
  const error = ERROR.exec(eventType);
  if (error) return { kind: 'error', trigger: `${error[1]} error` };
  return { kind: 'event', trigger: eventType };
}

function delayName(delay: unknown): string {
  if (typeof delay === 'number') return `${delay} ms`;
  if (typeof delay === 'string') return delay;
  return 'delay';
}

function guardField(guard: unknown): { guard?: string } {
  const text = guardText(guard);
  return text ? { guard: text } : {};
}

/** `and([a, not(b)])` → `a and not b`; named guards by name. */
export function guardText(guard: unknown): string | undefined {
  if (guard === undefined || guard === null) return undefined;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && 'type' in guard && typeof guard.type === 'string') return guard.type;
  if (typeof guard === 'function') {
    const parts = (guard as { guards?: unknown[] }).guards;
    const name = guard.name;
    if (Array.isArray(parts)) {
      const inner = parts.map((g) => guardText(g) ?? '?');
      if (name === 'not') return `not ${inner.join(' ')}`;
      if (name === 'and' || name === 'or') return inner.join(` ${name} `);
    }
    return name || 'guard';
  }
  return undefined;
}

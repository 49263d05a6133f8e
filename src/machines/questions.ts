/**
 * Questions to the chart without running an actor: where a name read from
 * storage goes, where a resting name goes on an event, and when its next
 * timer fires. Every answer is a snapshot computed by the machine's own
 * transition function (nothing is recomputed beside the chart) and no
 * effect runs: provided actions are not executed, invoked actors are not
 * started.
 *
 * The engine asks these for names without an actor (the start-up scan,
 * sleeping names) and the CLI for records read straight from storage.
 *
 * Cost: ~10 µs a question (the scan asks once per name at start: ~1 s of
 * CPU for 100,000 names). That is why the inert scope is built once here,
 * rather than by XState's `transition()`, which builds an actor per call (~90 µs).
 */
import { createEmptyActor, getNextTransitions, type SnapshotFrom } from 'xstate';
import type { CertificateEvent, CertificateMachine, LoadedState } from './certificate.js';

export type CertificateSnapshot = SnapshotFrom<CertificateMachine>;

/** A named delay of the chart: ms from the state's entry, from its context (the chart's delays read nothing else). */
type DelayFunction = (args: { context: CertificateSnapshot['context'] }) => number;

export interface ChartQuestions {
  /** The snapshot a name reaches once storage returned `loaded` (from `loading`, as at start or on waking). */
  afterLoad(loaded: LoadedState): CertificateSnapshot;
  /** The snapshot `event` leads to from `snapshot`. */
  next(snapshot: CertificateSnapshot, event: CertificateEvent): CertificateSnapshot;
  /** When the earliest timer armed in `snapshot`'s state fires (ms since epoch), or undefined when none is. */
  nextTimerAt(snapshot: CertificateSnapshot): number | undefined;
}

/**
 * Questions to `machine` (the engine's provided machine, or one built with
 * the clock and randomness the answers should use).
 *
 * @param now the clock the machine's guards read, for timer due times
 * @param serveExpired the `serveExpired` option actors of this machine get
 */
export function chartQuestions(machine: CertificateMachine, now: () => number, serveExpired = false): ChartQuestions {
  const input = { name: '', serveExpired };
  const self = createEmptyActor();
  // An inert scope, as XState's own `transition()` builds: effects are neither executed nor started.
  const scope = {
    self,
    system: self.system,
    id: '',
    sessionId: '',
    logger: () => {},
    defer: () => {},
    emit: () => {},
    stopChild: () => {},
    actionExecutor: () => {},
  } as unknown as Parameters<CertificateMachine['transition']>[2];
  const loading = machine.getInitialSnapshot(scope, input);
  const delays = machine.implementations.delays as unknown as Record<string, DelayFunction>;
  /**
   * The delays armed in a state configuration, by its state value. Which
   * timers are armed depends only on the active state nodes (XState's
   * `getNextTransitions` reads `snapshot._nodes`, which the value
   * determines), never on the context: asked once per configuration, not
   * once per name (the scan asks for every sleeping name). Bounded by the
   * chart's configurations.
   */
  const armedByValue = new Map<string, DelayFunction[]>();
  const armedDelays = (snapshot: CertificateSnapshot): DelayFunction[] => {
    const key = JSON.stringify(snapshot.value);
    let armed = armedByValue.get(key);
    // A memo: asking again gives the same delays (only the time differs, measured by bench:scale).
    // Stryker disable next-line ConditionalExpression: equivalent by design (see docs/mutation.md)
    if (armed === undefined) {
      // The timers of every state active in `snapshot` (each delayed transition is listed by its source state).
      // The chart names all its delays (no literal numbers), so each is a function of the context.
      const timers = new Set(getNextTransitions(snapshot).flatMap((transition) => transition.source.after));
      armed = [...new Set([...timers].map((timer) => delays[timer.delay as string] as DelayFunction))];
      armedByValue.set(key, armed);
    }
    return armed;
  };

  return {
    afterLoad(loaded) {
      // What the `load` actor invoked by `loading` reports when it resolves.
      return machine.transition(loading, { type: 'xstate.done.actor.load', actorId: 'load', output: loaded } as never, scope);
    },
    next(snapshot, event) {
      return machine.transition(snapshot, event, scope);
    },
    nextTimerAt(snapshot) {
      let earliest: number | undefined;
      for (const delay of armedDelays(snapshot)) {
        const at = now() + delay({ context: snapshot.context });
        earliest = Math.min(earliest ?? at, at);
      }
      return earliest;
    },
  };
}

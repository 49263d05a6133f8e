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
 * Cost: ~10–20 µs a question (the scan asks once per name at start: ~2 s
 * of CPU for 100,000 names). That is why the inert scope is built once here,
 * rather than by XState's `transition()`, which builds an actor per call
 * (~90 µs), and why `afterLoad` is memoised when given the chart's decisions
 * (see `START_GUARDS`): about a third of the chart's time for a warm
 * restart's names (`bench/tools/after-load.ts`). `next` is memoised the same
 * way for the one event every sleeping name gets, an ARI window
 * (`RENEWAL_INFO`, see `memoNext`): a million names ask every 6 h.
 */
import { isDeepStrictEqual } from 'node:util';
import { createEmptyActor, getNextTransitions, type SnapshotFrom } from 'xstate';
import type { CertificateContext, CertificateEvent, CertificateMachine, LoadedState } from './certificate.js';
import type { ChartDecisions } from './decisions.js';

export type CertificateSnapshot = SnapshotFrom<CertificateMachine>;

/** A named delay of the chart: ms from the state's entry, from its context (the chart's delays read nothing else). */
type DelayFunction = (args: { context: CertificateSnapshot['context'] }) => number;
/** A guard of the chart that reads only the context (no params). */
type ContextGuard = (args: { context: CertificateContext; event: unknown }, params: undefined) => boolean;

/**
 * The guards the chart evaluates between `loading`'s done event and the
 * state it rests in (`routing`, the `choosing` states) whose outcome varies
 * by name. Their outcomes on the context the load gives decide which states
 * the chart reaches: names alike in them get the same configuration and
 * differ only in their context. (`forced` and `servesExpired` are read there
 * too, but of context fields `loading` sets and the load never changes:
 * the same for every question of one `chartQuestions`. `paused` is listed
 * although it is too today — the questions' input sets no `pauseAfterMs` —
 * so that giving them one keeps the memo exact.) A guard added to
 * those transitions must be listed here: the property test in
 * test/chart.test.ts fails otherwise.
 */
const START_GUARDS = ['hasUsableCertificate', 'renewalDue', 'paused', 'backoffPending', 'floorHolds', 'hasCertificate'] as const;

export interface ChartQuestions {
  /** The snapshot a name reaches once storage returned `loaded` (from `loading`, as at start or on waking). */
  afterLoad(loaded: LoadedState): CertificateSnapshot;
  /**
   * The snapshot `event` leads to from `snapshot`: `snapshot` itself when the
   * chart's answer changes nothing (memoised questions; the chart's own
   * answer may be an equal copy).
   */
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
 * @param decide the decisions `machine` was built with (same clock, randomness
 *   and policy): given, `afterLoad` and `next` are memoised (see `memoAfterLoad`, `memoNext`)
 */
export function chartQuestions(machine: CertificateMachine, now: () => number, serveExpired = false, decide?: Pick<ChartDecisions, 'adoptStored' | 'setRenewAt'>): ChartQuestions {
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
    const key = configurationKey(snapshot);
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

  // What the `load` actor invoked by `loading` reports when it resolves.
  const askChart = (loaded: LoadedState) => machine.transition(loading, { type: 'xstate.done.actor.load', actorId: 'load', output: loaded } as never, scope);
  const afterLoad = decide ? memoAfterLoad(machine, loading, askChart, decide) : askChart;
  const askNext = (snapshot: CertificateSnapshot, event: CertificateEvent) => machine.transition(snapshot, event, scope);
  const next = decide ? memoNext(machine, askNext, decide) : askNext;

  return {
    afterLoad,
    next,
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

/**
 * `afterLoad`, memoised: the chart's answer for a loaded state is its
 * configuration (state value, tags, nodes — decided by the `START_GUARDS`'
 * outcomes) with the context the `adoptStored` action gives. Per name, that
 * context is computed by the chart's own `adoptStored` decision (drawing the
 * renewal jitter, once, as the chart would), then the guards are evaluated
 * on it by the chart's own guard implementations; the configuration comes
 * from the chart, asked once per combination of outcomes (at most 2⁶).
 *
 * A combination is kept only when the chart's answer, asked with this very
 * context (its jitter already drawn: `renewAt` given, so the chart draws
 * nothing), has exactly that context — i.e. the transition assigned nothing
 * but `adoptStored` (not so where routing records the issuance floor:
 * those are always asked of the chart). Bounded: one entry per combination.
 */
function memoAfterLoad(
  machine: CertificateMachine,
  loading: CertificateSnapshot,
  askChart: (loaded: LoadedState) => CertificateSnapshot,
  decide: Pick<ChartDecisions, 'adoptStored'>,
): (loaded: LoadedState) => CertificateSnapshot {
  const implementations = machine.implementations.guards as unknown as Record<string, ContextGuard>;
  const guards = START_GUARDS.map((name) => implementations[name]!);
  const doneEvent = { type: 'xstate.done.actor.load', actorId: 'load' };
  /** Combination of guard outcomes → the chart's answer to copy, or null: always ask the chart. */
  const answers = new Map<number, CertificateSnapshot | null>();
  return (loaded) => {
    // Object.assign onto a fresh object, not a spread of `loading.context`: a spread of it gave each
    // name's context hidden classes of its own (V8 logs them as transitions from a prototype map,
    // which it never caches), ~6 maps and descriptor arrays a name, dead at once, in old space —
    // and ~10 µs a name, most of a sleeping name's ARI recheck and of the start-up question.
    const context: CertificateContext = Object.assign({}, loading.context, decide.adoptStored(loading.context, loaded));
    let key = 0;
    for (let i = 0; i < guards.length; i++) if (guards[i]!({ context, event: doneEvent }, undefined)) key |= 1 << i;
    const known = answers.get(key);
    if (known) return { ...known, context };
    // The same load with this name's jitter already drawn: the chart's answer for it is the answer for `loaded`.
    const drawn: LoadedState = { ...loaded, certificate: context.certificate, renewAt: context.renewAt };
    const answer = askChart(drawn);
    if (known === undefined) answers.set(key, isDeepStrictEqual(answer.context, context) ? answer : null);
    return answer;
  };
}

/** A state configuration's key: its state value (the string itself for a state without children, as most are). */
const configurationKey = (snapshot: CertificateSnapshot): string => (typeof snapshot.value === 'string' ? snapshot.value : JSON.stringify(snapshot.value));

/**
 * `next`, memoised for `RENEWAL_INFO` (an ARI window: every sleeping name
 * gets one per recheck, a million names ~2,800 a minute), the chart still
 * the one decider. The chart's answer to it depends on the configuration it
 * arrives in and on its guard `acceptsRenewalInfo` (the chart's own
 * implementation, evaluated on the name's context and the event's time): in
 * `valid`, accepted, `valid` is re-entered with the context `setRenewAt`
 * gives (the chart's own decision); refused, or in a state that does not take
 * the event, nothing changes. The chart is asked once per configuration and
 * outcome, and its answer kept only when it is exactly one of those two: the
 * snapshot unchanged (value and context), or unchanged but for
 * `setRenewAt`'s context (then copied with each later name's context). Any
 * other answer — an action that assigns something else, another target — is
 * always asked of the chart; so are other events. Bounded: one entry per
 * configuration and outcome.
 *
 * Where the answer changes nothing — refused, not taken, or re-entered with
 * the very context the name had (the same window asked again) — `snapshot`
 * itself is returned, so the engine sees it without comparing.
 */
function memoNext(
  machine: CertificateMachine,
  askChart: (snapshot: CertificateSnapshot, event: CertificateEvent) => CertificateSnapshot,
  decide: Pick<ChartDecisions, 'setRenewAt'>,
): (snapshot: CertificateSnapshot, event: CertificateEvent) => CertificateSnapshot {
  const accepts = (machine.implementations.guards as unknown as Record<string, (args: { context: CertificateContext; event: unknown }, renewAt: number) => boolean>)
    .acceptsRenewalInfo!;
  type Kept = 'same' | CertificateSnapshot | null | undefined;
  /** Configuration → per outcome (refused, accepted): 'same' (nothing changes), the chart's answer to copy with `setRenewAt`'s context, null (always ask), or not known yet. */
  const answers = new Map<string, [Kept, Kept]>();
  const unchanged = (answer: CertificateSnapshot, snapshot: CertificateSnapshot) =>
    configurationKey(answer) === configurationKey(snapshot) && isDeepStrictEqual(answer.context, snapshot.context);
  return (snapshot, event) => {
    if (event.type !== 'RENEWAL_INFO') return askChart(snapshot, event);
    const { context } = snapshot;
    const accepted = accepts({ context, event }, event.renewAt);
    const update = accepted ? decide.setRenewAt(context, event.renewAt) : undefined;
    const changes = update !== undefined && changesContext(update, context);
    const configuration = configurationKey(snapshot);
    let byOutcome = answers.get(configuration);
    if (!byOutcome) answers.set(configuration, (byOutcome = [undefined, undefined]));
    const outcome = accepted ? 1 : 0;
    const known = byOutcome[outcome];
    // Nothing changes, or the chart re-enters the configuration with the context it had.
    if (known === 'same' || (known && !changes)) return snapshot;
    if (known) return { ...known, context: { ...context, ...update } };
    const answer = askChart(snapshot, event);
    if (known === null) return answer;
    if (accepted && !changes) {
      // This name's answer cannot tell "nothing changes" from "re-entered with setRenewAt's context": the next name's will.
      if (unchanged(answer, snapshot)) return snapshot;
      byOutcome[outcome] = null;
      return answer;
    }
    const kept =
      configurationKey(answer) !== configuration ? null : isDeepStrictEqual(answer.context, context) ? 'same' : isDeepStrictEqual(answer.context, { ...context, ...update }) ? answer : null;
    byOutcome[outcome] = kept;
    return kept === 'same' ? snapshot : answer;
  };
}

/** Whether merging `update` into `context` changes any of its fields. */
function changesContext(update: Partial<CertificateContext>, context: CertificateContext): boolean {
  for (const key in update) if (!Object.is(update[key as keyof CertificateContext], context[key as keyof CertificateContext])) return true;
  return false;
}

/**
 * Per-name transition history for the status page: the last N transitions of
 * each name, in memory, fed by the engine's public events. Bounded twice
 * (entries per name, names in total) so an on-demand flood cannot grow it.
 */
import type { CertEngineEventOf, CertEngineEventType } from '../engine/events.js';
import type { ErrorInfo, LifecycleState } from '../types.js';
import { briefError } from './view.js';

/** One recorded transition. */
export interface TransitionRecord {
  /** Engine clock time, ms since epoch. */
  at: number;
  from: LifecycleState | undefined;
  to: LifecycleState;
  /** The attempt this transition started (`cert_obtaining`'s `attempt`), if it started one. */
  attempt?: number;
  /** Why the attempt runs: `obtain`, `renew` or `expired`. */
  reason?: string;
  /** The attempt's error, on a move to `failed-backoff`. */
  error?: Pick<ErrorInfo, 'type' | 'message' | 'code' | 'problemType' | 'detail'>;
  /** The certificate's notAfter, on a move to `valid` after an attempt or an adoption. */
  notAfter?: number;
  /** True when the certificate was found in storage (another process issued it). */
  adopted?: boolean;
}

/** Options of {@link TransitionHistory}. */
export interface TransitionHistoryOptions {
  /** Transitions kept per name (default 20). */
  perName?: number;
  /** Names kept (default 100,000); the name seen least recently is dropped first. */
  maxNames?: number;
}

/** The subset of `CertEngine` the history listens to. */
export interface EventSource {
  on<T extends CertEngineEventType>(type: T, listener: (event: CertEngineEventOf<T>) => void): () => void;
}

type Annotation = Omit<TransitionRecord, 'at' | 'from' | 'to'>;

/** A ring of recent transitions per name. Attach it before `engine.start()` to see start-up transitions. */
export class TransitionHistory {
  readonly #perName: number;
  readonly #maxNames: number;
  readonly #rings = new Map<string, TransitionRecord[]>();
  /**
   * Details from `cert_*` events, attached to the name's next transition.
   * The machine emits them while taking the transition, before the engine
   * publishes `state_changed`.
   */
  readonly #pending = new Map<string, Annotation>();

  constructor(options: TransitionHistoryOptions = {}) {
    this.#perName = Math.max(1, Math.floor(options.perName ?? 20));
    this.#maxNames = Math.max(1, Math.floor(options.maxNames ?? 100_000));
  }

  /** Subscribe to an engine's events. Returns the unsubscribe function. */
  attach(engine: EventSource): () => void {
    const offs = [
      engine.on('cert_obtaining', (e) => this.#annotate(e.name, { attempt: e.attempt, reason: e.reason })),
      engine.on('cert_failed', (e) => this.#annotate(e.name, { error: briefError(e.error) })),
      engine.on('cert_obtained', (e) => this.#annotate(e.name, { notAfter: e.certificate.notAfter, ...(e.adopted ? { adopted: true } : {}) })),
      engine.on('cert_renewed', (e) => this.#annotate(e.name, { notAfter: e.certificate.notAfter, ...(e.adopted ? { adopted: true } : {}) })),
      engine.on('state_changed', (e) => this.record(e.name, { at: e.at, from: e.from, to: e.to })),
    ];
    return () => offs.forEach((off) => off());
  }

  /** Record a transition (with any details announced since the last one) and return the stored record. */
  record(name: string, transition: Pick<TransitionRecord, 'at' | 'from' | 'to'>): TransitionRecord {
    const entry: TransitionRecord = { ...transition, ...this.#pending.get(name) };
    this.#pending.delete(name);
    let ring = this.#rings.get(name);
    if (ring) {
      this.#rings.delete(name); // re-insert: Map order is our recency order
    } else {
      ring = [];
      if (this.#rings.size >= this.#maxNames) this.#rings.delete(this.#rings.keys().next().value!);
    }
    ring.push(entry);
    if (ring.length > this.#perName) ring.splice(0, ring.length - this.#perName);
    this.#rings.set(name, ring);
    return entry;
  }

  /** Transitions of a name, oldest first (a copy). */
  of(name: string): TransitionRecord[] {
    return [...(this.#rings.get(name) ?? [])];
  }

  /** Every name's transitions, oldest first (copies). */
  all(): Record<string, TransitionRecord[]> {
    const out: Record<string, TransitionRecord[]> = {};
    for (const [name, ring] of this.#rings) out[name] = [...ring];
    return out;
  }

  #annotate(name: string, details: Annotation): void {
    this.#pending.set(name, { ...this.#pending.get(name), ...details });
    // Bounded like the rings: details for names that never transition are dropped.
    if (this.#pending.size > this.#maxNames) this.#pending.delete(this.#pending.keys().next().value!);
  }
}

/**
 * Held replies: the handshakes and operator actions the chart keeps until the
 * state that ends what they wait for, which releases them with its one answer.
 *
 * Releasing calls each reply once and returns; replies settle promises, so
 * their continuations run later on a fresh stack, and nothing here sends an
 * event back into an actor: a release cannot recurse, whatever the number
 * of waiters. Handshakes are bounded (per name and in total) and each has its
 * own deadline; operators wait for the outcome (their caller bounds the wait).
 */
import type { HandshakeAnswer, HandshakeReply, OperatorOutcome, OperatorReply } from '../machines/certificate.js';
import type { Clock } from '../types.js';
import type { Held, NameRecord } from './name-record.js';

export interface HeldLimits {
  /** Longest a handshake is held, ms. */
  handshakeTimeout: number;
  /** Most handshakes held per name, and in total; beyond them a handshake is refused at once. */
  maxPerName: number;
  maxTotal: number;
}

export class HeldReplies {
  readonly #clock: Clock;
  readonly #limits: HeldLimits;
  #handshakes = 0;

  constructor(clock: Clock, limits: HeldLimits) {
    this.#clock = clock;
    this.#limits = limits;
  }

  /** Handshakes held right now, over every name. */
  get handshakes(): number {
    return this.#handshakes;
  }

  /** Whether anything is held for the name (a name holding replies never sleeps). */
  holds(record: NameRecord): boolean {
    return (record.held?.handshakes?.size ?? 0) > 0 || (record.held?.operators?.size ?? 0) > 0;
  }

  /** Keep a handshake until its name's release, or its own deadline. A name no longer held answers `stopped`. */
  holdHandshake(record: NameRecord | undefined, reply: HandshakeReply): void {
    if (!record) return reply({ ok: false, stopped: true });
    const held = (record.held ??= newHeld());
    const handshakes = (held.handshakes ??= new Map());
    if (handshakes.size >= this.#limits.maxPerName || this.#handshakes >= this.#limits.maxTotal) {
      return reply({ ok: false, error: { type: 'TooManyWaitersError', message: 'too many waiting handshakes', at: this.#clock.now() } });
    }
    handshakes.set(reply, this.#clock.now() + this.#limits.handshakeTimeout);
    this.#handshakes++;
    if (held.deadlineTimer === undefined) this.#armDeadline(held);
  }

  /** Keep an operator's reply until the outcome of the attempt it asked for. */
  holdOperator(record: NameRecord | undefined, reply: OperatorReply | undefined): void {
    if (!reply) return;
    if (!record) return reply({ ok: false, stopped: true });
    ((record.held ??= newHeld()).operators ??= new Set()).add(reply);
  }

  /** An operator gave up waiting (its own timeout): forget its reply. */
  dropOperator(record: NameRecord, reply: OperatorReply): void {
    record.held?.operators?.delete(reply);
  }

  /** Answer every held handshake of the name with the chart's answer. */
  releaseHandshakes(record: NameRecord | undefined, answer: HandshakeAnswer): void {
    const held = record?.held;
    const handshakes = held?.handshakes;
    if (!held || !handshakes || handshakes.size === 0) return;
    held.handshakes = undefined;
    if (held.deadlineTimer !== undefined) this.#clock.clearTimeout(held.deadlineTimer);
    held.deadlineTimer = undefined;
    this.#handshakes -= handshakes.size;
    for (const reply of handshakes.keys()) reply(answer);
  }

  /** Answer every held operator of the name with the outcome. */
  releaseOperators(record: NameRecord | undefined, outcome: OperatorOutcome): void {
    const held = record?.held;
    const operators = held?.operators;
    if (!held || !operators || operators.size === 0) return;
    held.operators = undefined;
    for (const reply of operators) reply(outcome);
  }

  /** One timer per name, for its oldest handshake's deadline (a herd of 10,000 costs one). */
  #armDeadline(held: Held): void {
    const oldest = held.handshakes?.values().next();
    if (!oldest || oldest.done) return;
    held.deadlineTimer = this.#clock.setTimeout(() => this.#expire(held), Math.max(0, oldest.value - this.#clock.now()));
  }

  /** Answer the handshakes whose deadline has passed with one shared timeout; the attempt goes on for the rest. */
  #expire(held: Held): void {
    held.deadlineTimer = undefined;
    const handshakes = held.handshakes;
    if (!handshakes) return;
    const now = this.#clock.now();
    const timeout: HandshakeAnswer = { ok: false, error: { type: 'HandshakeTimeoutError', message: 'handshake timeout', at: now } };
    const expired: HandshakeReply[] = [];
    for (const [reply, deadline] of handshakes) {
      if (deadline > now) break;
      expired.push(reply);
    }
    for (const reply of expired) handshakes.delete(reply);
    this.#handshakes -= expired.length;
    this.#armDeadline(held);
    for (const reply of expired) reply(timeout);
  }
}

function newHeld(): Held {
  return { handshakes: undefined, deadlineTimer: undefined, operators: undefined };
}

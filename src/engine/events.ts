/**
 * The engine's public events: a stable, documented payload for each.
 */
import type { CertificateEmitted } from '../machines/certificate.js';
import type { LifecycleState } from '../types.js';

/**
 * A name moved between lifecycle states. A name is `loading` from the moment
 * the engine knows it (that is its state in `status()` before any event), so
 * its first event leaves `loading`: `from` is always a state.
 */
export interface StateChangedEvent {
  type: 'state_changed';
  name: string;
  from: LifecycleState;
  to: LifecycleState;
  /** Engine clock time of the transition, ms since epoch. */
  at: number;
}

/**
 * One answered handshake (emitted only while someone listens, so the hot path
 * stays free): `immediate` = served at once from memory, `waited` = settled by
 * the attempt in flight, `failed` = refused or errored (with the error type).
 */
export interface HandshakeEvent {
  type: 'handshake';
  name: string;
  outcome: 'immediate' | 'waited' | 'failed';
  /** Engine clock time the handshake spent waiting, ms (0 when immediate). */
  waitedMs: number;
  /** Error class name when `failed`. */
  errorType?: string;
}

/** One issuer's part of an attempt (an attempt tries issuers in order). */
export interface IssuerAttemptEvent {
  type: 'issuer_attempt';
  name: string;
  /** The issuer's `id`. */
  issuer: string;
  result: 'success' | 'failure';
  /** Error class name on failure. */
  errorType?: string;
  /** Engine clock time the issuer took, ms. */
  durationMs: number;
}

/** Every event the engine publishes, by type. */
export type CertEngineEvent = CertificateEmitted | StateChangedEvent | HandshakeEvent | IssuerAttemptEvent;

/** Event type names. */
export type CertEngineEventType = CertEngineEvent['type'];

/** The payload of one event type. */
export type CertEngineEventOf<T extends CertEngineEventType> = Extract<CertEngineEvent, { type: T }>;

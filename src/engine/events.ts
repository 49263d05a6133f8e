/**
 * The engine's public events: a stable, documented payload for each.
 */
import type { CertificateEmitted } from '../machines/certificate.js';
import type { LifecycleState } from '../types.js';

/** A name moved between lifecycle states. */
export interface StateChangedEvent {
  type: 'state_changed';
  name: string;
  from: LifecycleState | undefined;
  to: LifecycleState;
  /** Engine clock time of the transition, ms since epoch. */
  at: number;
}

/** Every event the engine publishes, by type. */
export type CertEngineEvent = CertificateEmitted | StateChangedEvent;

/** Event type names. */
export type CertEngineEventType = CertEngineEvent['type'];

/** The payload of one event type. */
export type CertEngineEventOf<T extends CertEngineEventType> = Extract<CertEngineEvent, { type: T }>;

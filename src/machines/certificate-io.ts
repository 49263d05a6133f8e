/**
 * What the lifecycle chart exchanges with the outside: its context (metadata
 * only), the events it takes, the answers and outcomes it gives, the inputs
 * and outputs of the effects it invokes, what it emits, and the tags by which
 * its states say what a handshake gets.
 */
import type { CertificateMeta, ErrorInfo, LifecycleState } from '../types.js';
import type { TimingPolicy } from './policy.js';

/** Context: metadata only. Keys and PEMs never enter it (the inspector shows context). */
export interface CertificateContext {
  /** The (normalised) name this actor manages. */
  name: string;
  /** The certificate in use, if any (may be expired). */
  certificate?: CertificateMeta;
  /** When renewal is due, ms since epoch. */
  renewAt?: number;
  /** Consecutive failed attempts (reset by success). */
  attempts: number;
  /** The last attempt's (or storage read's) error. */
  lastError?: ErrorInfo;
  /** No attempt (in `storage-unreadable`: no read) before this time, ms since epoch. */
  nextAttemptAt?: number;
  /** Attempts started by this actor, for logs. */
  attemptSeq: number;
  /** Serve an expired certificate during backoff instead of failing the handshake. */
  serveExpired: boolean;
  /** An operator asked for an attempt before storage was read: routing starts one, whatever the renewal time or backoff. */
  forced: boolean;
  /** Since when the name has been failing (the first failure since its last success), ms since epoch. */
  failingSince?: number;
  /** Failing this long with nothing to serve pauses the name (on-demand names; undefined: never). See pause.ts. */
  pauseAfterMs?: number;
  /** Times of this name's recent orders (issuer calls), oldest first: the issuance floor's window. */
  orders?: number[];
  /** The certificate whose ARI "renew now" was already honoured (once per certificate). */
  ariNowFor?: string;
}

/** What a handshake is answered with. */
export type HandshakeAnswer =
  | { ok: true; fingerprint: string; expired: boolean }
  | { ok: false; error: ErrorInfo; nextAttemptAt?: number }
  | { ok: false; stopped: true };

/** An answer a state gives at once (never `stopped`: only the final state gives that). */
export type ImmediateAnswer = Exclude<HandshakeAnswer, { stopped: true }>;

/** The reply callback a handshake event carries; called exactly once. */
export type HandshakeReply = (answer: HandshakeAnswer) => void;

/** What an operator's FORCE_RENEW is answered with: the outcome of the attempt it asked for. */
export type OperatorOutcome =
  | { ok: true; certificate: CertificateMeta }
  | { ok: false; error: ErrorInfo; nextAttemptAt?: number }
  | { ok: false; stopped: true };

/** The reply callback a FORCE_RENEW event may carry; called at most once. */
export type OperatorReply = (outcome: OperatorOutcome) => void;

/** Failure record persisted beside the certificate, so a restart keeps the backoff. */
export interface FailureRecord {
  attempts: number;
  lastError?: ErrorInfo;
  nextAttemptAt?: number;
  /** Since when the name has been failing (kept across restarts and processes, for pausing). */
  failingSince?: number;
  /** Times of the name's recent orders (the issuance floor), shared with restarts and the cluster. */
  orders?: number[];
}

/** Output of the `loadStored` actor. */
export interface LoadedState {
  certificate?: CertificateMeta;
  failure?: FailureRecord;
  /** The renewal time already drawn for `certificate` (a name woken from sleep keeps its jitter). */
  renewAt?: number;
}

/** Input of the `attempt` actor. */
export interface AttemptInput {
  name: string;
  /** The certificate being replaced, if any (for `replaces` and the re-read after locking). */
  current?: CertificateMeta;
  /** Why this attempt runs. */
  reason: 'obtain' | 'renew' | 'expired';
  /** Issuers whose CA's Retry-After (from the last failure) has not passed: issuer id → ms since epoch. */
  issuerRetryAfter?: Record<string, number>;
  /** The name's recent orders (the issuance floor's window), as the chart knows them. */
  orders?: number[];
  /** An operator asked for this attempt: it may bypass the issuance floor. */
  forced?: boolean;
}

/** Output of the `attempt` actor: the certificate now in storage (issued, or found fresh after locking). */
export interface AttemptOutput {
  certificate: CertificateMeta;
  /** True when another process had already stored a fresh certificate: nothing was issued. */
  adopted: boolean;
  /** Orders this attempt placed (issuer calls that reached a CA); counted toward the issuance floor. */
  ordered?: number;
}

export type CertificateEvent =
  | { type: 'HANDSHAKE'; reply: HandshakeReply }
  | { type: 'FORCE_RENEW'; reply?: OperatorReply }
  | { type: 'STORAGE_CHANGED'; certificate: CertificateMeta }
  | { type: 'RENEWAL_INFO'; renewAt: number }
  /** A handshake for a paused name whose permission was just asked afresh and given: one attempt. */
  | { type: 'RESUME'; reply: HandshakeReply }
  | { type: 'STOP' };

/** Notifications the machine emits (engine.on(...) re-publishes them). */
export type CertificateEmitted =
  | {
      type: 'cert_obtaining';
      name: string;
      reason: AttemptInput['reason'];
      attempt: number;
      /** An operator's forceRenew started it. */
      forced: boolean;
      /** It starts although the issuance floor holds (an operator's explicit bypass). */
      floorBypassed: boolean;
    }
  | { type: 'cert_obtained'; name: string; certificate: CertificateMeta; adopted: boolean }
  | { type: 'cert_renewed'; name: string; certificate: CertificateMeta; previous: CertificateMeta; adopted: boolean }
  | { type: 'cert_failed'; name: string; error: ErrorInfo; attempts: number; nextAttemptAt: number }
  | { type: 'cert_expired'; name: string; certificate: CertificateMeta };

/** Input when creating a per-name actor. */
export interface CertificateInput {
  name: string;
  serveExpired?: boolean;
  /** Pause the name after failing this long with nothing to serve (on-demand names); undefined: never. */
  pauseAfterMs?: number;
}

/** What the machine needs from the outside world to *decide* (not to act). */
export interface MachineDeps {
  /** The engine clock's `now()`. */
  now(): number;
  /** Uniform [0, 1) for jitter. */
  random(): number;
  /** Renewal and backoff tunables. */
  policy: TimingPolicy;
}

/**
 * The tags by which the chart says what a handshake gets in a resting state
 * (exactly one per state that can be at rest, except `stopped`), and
 * `may-sleep` for the state a name may rest in without an actor.
 */
export const TAGS = {
  servesCertificate: 'serves-certificate',
  servesExpiredCertificate: 'serves-expired-certificate',
  refuses: 'refuses',
  holds: 'holds',
  /** Paused: refused, unless permission asked afresh allows a RESUME (the engine asks, the chart attempts). */
  resumes: 'resumes',
  maySleep: 'may-sleep',
} as const;

/** The answer tags: one of them marks every resting state but `stopped`. */
export const ANSWER_TAGS = [TAGS.servesCertificate, TAGS.servesExpiredCertificate, TAGS.refuses, TAGS.holds, TAGS.resumes] as const;

/** What the certificate in hand is worth at `now`. */
export function certificateKind(context: Pick<CertificateContext, 'certificate'>, now: number): 'none' | 'usable' | 'expired' {
  if (context.certificate === undefined) return 'none';
  return now < context.certificate.notAfter ? 'usable' : 'expired';
}

/** The answer of a state that refuses: the recorded error, and when the next attempt (or read) may start. */
export function refusalOf(context: Pick<CertificateContext, 'lastError' | 'nextAttemptAt'>): { ok: false; error: ErrorInfo; nextAttemptAt?: number } {
  return {
    ok: false,
    error: context.lastError ?? { type: 'CertificateUnavailableError', message: 'no certificate', at: 0 },
    nextAttemptAt: context.nextAttemptAt,
  };
}

/**
 * The lifecycle state shown to users for a snapshot value (`snapshot.value`):
 * the top-level state's name, except inside `attempting`, which is shown as
 * the kind of attempt in flight (`obtaining`, `renewing`, `expired-renewing`).
 * The substates of `failed-backoff` (serving, refusing) show as `failed-backoff`.
 */
export function lifecycleStateOf(value: unknown): LifecycleState {
  if (typeof value === 'string') return value as LifecycleState;
  const [top, child] = Object.entries(value as Record<string, unknown>)[0] ?? ['loading'];
  return (top === 'attempting' ? child : top) as LifecycleState;
}

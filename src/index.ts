/**
 * certstate — automatic TLS certificates for Node.js, built as an explicit
 * XState statechart per name.
 *
 * @packageDocumentation
 */
export { createCertEngine, CertEngine, stateOf } from './engine/engine.js';
export type { CertEngineOptions, StartOptions, EngineStats, ServedCertificate, HandshakeInfo, ForceRenewOptions } from './engine/engine.js';
export type { ManagedEntry } from './engine/managed-names.js';
export type { StatusFilter, StatusPage, StatusQuery, StatusSummary, StatusSummaryOptions } from './engine/engine.js';
export type { TlsOptionsConfig, TlsCallbacks } from './engine/handshake-answers.js';
export type { OnDemandOptions, DecisionInfo, OnDemandStats } from './engine/on-demand.js';
export type { SessionTicketOptions, SessionTicketServerOptions } from './engine/session-tickets.js';
export type { StorageCleanerOptions } from './engine/storage-cleaner.js';
export type { CertEngineEvent, CertEngineEventOf, CertEngineEventType, StateChangedEvent, HandshakeEvent, IssuerAttemptEvent } from './engine/events.js';

export { certificateMachine, createCertificateMachine, TAGS } from './machines/certificate.js';
export type {
  AttemptInput,
  AttemptOutput,
  CertificateContext,
  CertificateEmitted,
  CertificateEvent,
  CertificateInput,
  FailureRecord,
  HandshakeAnswer,
  HandshakeReply,
  LoadedState,
  MachineDeps,
  OperatorOutcome,
  OperatorReply,
} from './machines/certificate.js';
export { defaultTimingPolicy, nextAttemptTime, renewalTime } from './machines/policy.js';
export type { TimingPolicy } from './machines/policy.js';

export { realClock, ManualClock, MAX_TIMER_MS } from './clock.js';
export { normalizeName, isIpLiteral } from './names.js';
export type { InvalidNameReason } from './names.js';
export type { NormalizeNameOptions } from './names.js';
export { parseCertificateBundle, certificateCoversName, ariCertId, splitPemChain } from './certs.js';
export type { ParseCertificateOptions } from './certs.js';
export { keys as storageKeys } from './storage-keys.js';

export { memoryStorage } from './adapters/storage/memory.js';
export type { MemoryStorageOptions } from './adapters/storage/memory.js';
export { fileStorage, DEFAULT_DATA_DIR } from './adapters/storage/file.js';
export type { FileStorageOptions } from './adapters/storage/file.js';
export type { StorageChange, WatchableStorage } from './adapters/storage/notify.js';
export { isWatchable } from './adapters/storage/notify.js';

export {
  acmeIssuer,
  LETS_ENCRYPT_PRODUCTION,
  LETS_ENCRYPT_STAGING,
  ZEROSSL,
  GOOGLE_TRUST_SERVICES,
  GOOGLE_TRUST_SERVICES_STAGING,
} from './adapters/issuers/acme.js';
export type { AcmeIssuer, AcmeIssuerOptions, AcmeKeyType, AcmeChallengeType, ExternalAccountBinding } from './adapters/issuers/acme.js';
export type { DnsProvider, DnsProviderCallOptions } from './adapters/challenges/dns-01.js';
export { createHttpChallengeHandler } from './adapters/challenges/http-01.js';
export type { HttpChallengeHandler, HttpFallback } from './adapters/challenges/http-01.js';
export { createTlsAlpnResponder } from './adapters/challenges/tls-alpn-01.js';
export type { TlsAlpnResponder, TlsAlpnResponderOptions } from './adapters/challenges/tls-alpn-01.js';
export { localCaIssuer, localCaCertificate } from './adapters/issuers/local-ca.js';
export type { LocalCaOptions } from './adapters/issuers/local-ca.js';

export * from './errors.js';
export type * from './types.js';

// ─── Admin surface: status page, metrics, diagrams, events, inspector (src/admin) ───
export {
  createAdminHandler,
  serveAdmin,
  MIN_TOKEN_LENGTH,
  toMermaid,
  toSvg,
  lifecycleStates,
  readChart,
  TransitionHistory,
  MetricsCollector,
  renderMetrics,
  registerPromClient,
  LIFECYCLE_STATES,
  DEFAULT_WAIT_BUCKETS,
  PrometheusWriter,
  PROMETHEUS_CONTENT_TYPE,
  engineEvents,
  ENGINE_EVENT_TYPES,
  createLocalInspector,
  serializeInspectionEvent,
  actorIdOf,
} from './admin/index.js';
export type {
  AdminEngine,
  AdminHandler,
  AdminHandlerOptions,
  NameView,
  AdminServer,
  ServeAdminOptions,
  SvgOptions,
  Chart,
  ChartState,
  ChartTransition,
  TransitionRecord,
  TransitionHistoryOptions,
  HandshakeAnswerKind,
  MetricsCollectorOptions,
  PromClientEngine,
  PromClientOptions,
  PromClientRegistration,
  PromClientRegistry,
  EngineEventsOptions,
  EngineEventIterator,
  LocalInspector,
  LocalInspectorOptions,
  InspectionRecord,
} from './admin/index.js';

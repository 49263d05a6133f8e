/**
 * The admin surface: status page, metrics, diagrams, event stream.
 * Re-exported from the package root.
 */
export { createAdminHandler } from './handler.js';
export type { AdminEngine, AdminHandler, AdminHandlerOptions, NameView } from './handler.js';
export { serveAdmin, MIN_TOKEN_LENGTH } from './serve.js';
export type { AdminServer, ServeAdminOptions } from './serve.js';
export { toMermaid, toSvg, lifecycleStates } from './diagram.js';
export type { SvgOptions } from './diagram.js';
export { readChart } from './chart.js';
export type { Chart, ChartState, ChartTransition } from './chart.js';
export { TransitionHistory } from './history.js';
export type { TransitionRecord, TransitionHistoryOptions } from './history.js';
export { MetricsCollector, renderMetrics, LIFECYCLE_STATES, DEFAULT_WAIT_BUCKETS } from './metrics.js';
export type { HandshakeAnswerKind, MetricsCollectorOptions } from './metrics.js';
export { registerPromClient } from './prom-client.js';
export type { PromClientEngine, PromClientOptions, PromClientRegistration, PromClientRegistry } from './prom-client.js';
export { PrometheusWriter, PROMETHEUS_CONTENT_TYPE, escapeLabelValue } from './prometheus.js';
export { engineEvents, ENGINE_EVENT_TYPES } from './event-stream.js';
export type { EngineEventsOptions, EngineEventIterator } from './event-stream.js';
export { escapeHtml, jsonForHtml } from './escape.js';
export { actorIdOf, createLocalInspector, serializeInspectionEvent } from './inspector.js';
export type { LocalInspector, LocalInspectorOptions, InspectionRecord } from './inspector.js';

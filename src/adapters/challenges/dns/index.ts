/**
 * `certstate/dns`: DNS-01 providers for wildcard certificates, and what they
 * share (CNAME delegation, the propagation check, timeouts, secret scrubbing).
 *
 * The cloud providers load their official SDKs (optional peer dependencies)
 * only when first used, so importing this module costs none of them.
 *
 * @packageDocumentation
 */
export { rfc2136DnsProvider } from './rfc2136.js';
export type { Rfc2136DnsProviderOptions } from './rfc2136.js';
export type { TsigKey, TsigAlgorithm } from './tsig.js';
export { defineDnsProvider } from './provider.js';
export type { DnsProviderOptions, TxtRecord, TxtRecordWriter } from './provider.js';
export type { PropagationOptions } from './propagation.js';
export { dns01RecordName } from '../dns-01.js';
export type { DnsProvider, DnsProviderCallOptions } from '../dns-01.js';
export { DnsError, DnsServerError, DnsPropagationError, DnsProviderError } from '../../../errors.js';
export type { DnsErrorOptions } from '../../../errors.js';

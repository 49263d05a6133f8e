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
export { execDnsProvider } from './exec.js';
export type { ExecDnsProviderOptions } from './exec.js';
export { acmeDnsProvider } from './acme-dns.js';
export type { AcmeDnsProviderOptions, AcmeDnsAccount } from './acme-dns.js';
export { cloudflareDnsProvider } from './cloudflare.js';
export type { CloudflareDnsProviderOptions } from './cloudflare.js';
export { route53DnsProvider } from './route53.js';
export type { Route53DnsProviderOptions } from './route53.js';

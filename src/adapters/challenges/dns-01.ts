/**
 * DNS-01 (RFC 8555 §8.4): the contract a DNS provider implements so the ACME
 * issuer can prove control of a name by publishing a TXT record. DNS-01 is the
 * only challenge that can validate wildcard names.
 *
 * Providers must *add* the value rather than replace the record set: a
 * certificate for `example.com` and `*.example.com` needs two TXT values at
 * `_acme-challenge.example.com` at the same time.
 */

/** Options passed to each provider call. */
export interface DnsProviderCallOptions {
  /** Aborted when the issuance attempt is abandoned. */
  signal?: AbortSignal;
}

/** Publishes and withdraws DNS-01 TXT records. */
export interface DnsProvider {
  /**
   * Add TXT `value` at `fqdn` (e.g. `_acme-challenge.example.com`, no
   * trailing dot), keeping any other values already there.
   */
  set(fqdn: string, value: string, options?: DnsProviderCallOptions): Promise<void>;
  /** Remove TXT `value` from `fqdn` (absent is not an error). Called even when the attempt failed. */
  remove(fqdn: string, value: string, options?: DnsProviderCallOptions): Promise<void>;
  /**
   * Resolve once the record is visible to the CA's resolvers (e.g. polling the
   * zone's authoritative servers). Without it, the CA is told right after `set`.
   */
  waitForPropagation?(fqdn: string, value: string, options?: DnsProviderCallOptions): Promise<void>;
}

/** The TXT record name for validating `name` (a wildcard validates at its base name). */
export function dns01RecordName(name: string): string {
  const base = name.startsWith('*.') ? name.slice(2) : name;
  return `_acme-challenge.${base.replace(/\.$/, '')}`;
}

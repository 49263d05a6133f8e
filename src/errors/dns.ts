/** Errors of the DNS-01 providers (src/adapters/challenges/dns). */
import { IssuanceError } from './issuance.js';

/** Options of `DnsError` and its subclasses. */
export interface DnsErrorOptions {
  /** Machine-readable code. */
  code?: string;
  cause?: unknown;
  /** The provider that failed (`rfc2136`, `cloudflare`, `route53`, `acme-dns`, `exec`, …). */
  provider?: string;
  /** The DNS server or API endpoint involved, when there is one (never with credentials). */
  server?: string;
}

/**
 * A DNS-01 provider could not publish, withdraw or check a TXT record.
 * Messages never contain credentials: providers scrub them before throwing.
 */
export class DnsError extends IssuanceError {
  /** The provider that failed, when known. */
  readonly provider?: string;
  /** The DNS server or API endpoint involved, when there is one. */
  readonly server?: string;

  constructor(message: string, options?: DnsErrorOptions) {
    super(message, { code: options?.code ?? 'ERR_DNS', ...(options?.cause !== undefined ? { cause: options.cause } : {}) });
    if (options?.provider !== undefined) this.provider = options.provider;
    if (options?.server !== undefined) this.server = options.server;
  }
}

/**
 * A DNS server did not give a usable answer to a query or an update: it timed
 * out (`ERR_DNS_TIMEOUT`), answered with an error RCODE (`ERR_DNS_RCODE`, the
 * RCODE's name in `rcode`, e.g. `REFUSED`), refused our TSIG signature
 * (`ERR_DNS_TSIG_REFUSED`, the TSIG error in `rcode`, e.g. `BADKEY`), or sent a
 * malformed, unsigned or mismatched message
 * (`ERR_DNS_MALFORMED`).
 */
export class DnsServerError extends DnsError {
  /** The RCODE the server answered, when it answered with one (e.g. `REFUSED`, `NOTAUTH`). */
  readonly rcode?: string;

  constructor(message: string, options?: DnsErrorOptions & { rcode?: string }) {
    super(message, { ...options, code: options?.code ?? 'ERR_DNS_SERVER' });
    if (options?.rcode !== undefined) this.rcode = options.rcode;
  }
}

/**
 * The TXT value was not visible on every authoritative server of its zone
 * within the propagation timeout. `lagging` names each server that did not
 * answer it, with why (`ns2.example.com (192.0.2.2): answers without the value`).
 */
export class DnsPropagationError extends DnsError {
  /** The record name that was checked. */
  readonly fqdn: string;
  /** The servers that did not answer the value, each with the last reason. */
  readonly lagging: readonly string[];

  constructor(fqdn: string, lagging: readonly string[], timeoutMs: number, options?: DnsErrorOptions) {
    super(`TXT value at ${fqdn} not visible on every authoritative server within ${timeoutMs} ms; lagging: ${lagging.join('; ')}`, {
      ...options,
      code: options?.code ?? 'ERR_DNS_PROPAGATION_TIMEOUT',
    });
    this.fqdn = fqdn;
    this.lagging = [...lagging];
  }
}

/**
 * A DNS provider's API or script refused or failed (HTTP status, API error,
 * script exit code); `status` holds the HTTP status or the exit code.
 */
export class DnsProviderError extends DnsError {
  /** The HTTP status of the API's answer, or the exit code of an `exec` script. */
  readonly status?: number;

  constructor(message: string, options?: DnsErrorOptions & { status?: number }) {
    super(message, { ...options, code: options?.code ?? 'ERR_DNS_PROVIDER' });
    if (options?.status !== undefined) this.status = options.status;
  }
}

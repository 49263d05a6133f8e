/**
 * CNAME delegation of DNS-01 (the acme-dns pattern): `_acme-challenge.<name>`
 * may be a CNAME to a name in another zone — one the provider's credentials
 * may write, often a zone kept only for challenges — and the CA follows the
 * CNAME when it looks up the TXT record (RFC 8555 §8.4 leaves that to DNS).
 * So the record is written where the chain ends, as lego and certbot do.
 * Providers take `followCname: false` to always write at the name itself.
 */
import { DnsError } from '../../../errors.js';
import type { Resolver } from './resolver.js';

/** Longest CNAME chain followed; resolvers give up at about this length too. */
export const MAX_CNAME_HOPS = 8;

/** Where TXT records for `fqdn` must be written: the end of its CNAME chain (`fqdn` itself without one). */
export async function delegatedName(fqdn: string, resolver: Resolver, signal?: AbortSignal): Promise<string> {
  const seen = new Set([fqdn]);
  let name = fqdn;
  for (let hop = 0; hop < MAX_CNAME_HOPS; hop++) {
    const target = await resolver.cnameOf(name, signal);
    if (target === undefined) return name;
    if (seen.has(target)) throw new DnsError(`CNAME chain of ${fqdn} loops at ${target}`, { code: 'ERR_DNS_CNAME_LOOP' });
    seen.add(target);
    name = target;
  }
  throw new DnsError(`CNAME chain of ${fqdn} is longer than ${MAX_CNAME_HOPS} hops`, { code: 'ERR_DNS_CNAME_LOOP' });
}

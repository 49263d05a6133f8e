/**
 * RFC 2136 dynamic update with TSIG: the standard way to change records on
 * BIND, Knot, PowerDNS and the many DNS hosts that speak it.
 *
 * `set` sends one UPDATE that adds the value (RFC 2136 §2.5.1: an RR already
 * there is ignored, so adding twice is harmless and other values stay);
 * `remove` sends one that deletes exactly that RR (§2.5.4, class NONE), so a
 * value another attempt added at the same name stays. Updates go over TCP by
 * default (no truncation, no spoofed UDP answers); every answer must carry
 * a valid TSIG signature of our key before its RCODE is believed.
 */
import dnsPacket from 'dns-packet';
import { ConfigError, DnsServerError } from '../../../errors.js';
import type { DnsProvider } from '../dns-01.js';
import { defineDnsProvider, type DnsProviderOptions, type TxtRecord } from './provider.js';
import { Resolver } from './resolver.js';
import { exchange, formatServerAddress, parseServerAddress } from './transport.js';
import { prepareTsigKey, tsigSign, tsigVerify, type TsigKey } from './tsig.js';
import { dnsName, encodeUpdate, messageId, rcodeOf, type TxtChange } from './wire.js';

/** Options of `rfc2136DnsProvider`. */
export interface Rfc2136DnsProviderOptions extends DnsProviderOptions {
  /** The primary server that takes updates: `"192.0.2.53"`, `"192.0.2.53:5353"`, `"[2001:db8::53]"`. */
  server: string;
  /**
   * The TSIG key the server allows to update the zone (`allow-update { key … }`
   * in BIND, or an `update-policy` grant). Omit only for a server that allows
   * updates by address, which anyone who can spoof that address can use too.
   */
  tsigKey?: TsigKey;
  /** The zone to update. Default: found by asking `server` for the SOA of the record name. */
  zone?: string;
  /** TTL of added records, seconds. Default 60. */
  ttl?: number;
  /** `tcp` (default) or `udp` (retried over TCP when the answer is truncated). */
  transport?: 'tcp' | 'udp';
  /** Timeout of each message to `server`, ms. Default 10 000. */
  timeoutMs?: number;
}

/**
 * A `DnsProvider` that writes TXT records with RFC 2136 dynamic updates.
 * Throws `ConfigError` for bad options (never echoing the TSIG secret).
 *
 * @example
 * rfc2136DnsProvider({
 *   server: '192.0.2.53',
 *   tsigKey: { name: 'certstate-acme', algorithm: 'hmac-sha256', secret: process.env.TSIG_SECRET! },
 * })
 */
export function rfc2136DnsProvider(options: Rfc2136DnsProviderOptions): DnsProvider {
  const what = 'rfc2136DnsProvider';
  const server = parseServerAddress(options?.server);
  if (!server) throw new ConfigError(`${what}: server must be an IP address with an optional port`);
  const label = formatServerAddress(server);
  const key = options.tsigKey === undefined ? undefined : prepareTsigKey(options.tsigKey);
  const zone = options.zone === undefined ? undefined : dnsName(options.zone);
  if (options.zone !== undefined && !zone) throw new ConfigError(`${what}: zone must be a DNS name`);
  const ttl = options.ttl ?? 60;
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 86_400) throw new ConfigError(`${what}: ttl must be whole seconds between 0 and 86400`);
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new ConfigError(`${what}: timeoutMs must be a positive number`);
  const tcp = (options.transport ?? 'tcp') === 'tcp';
  if (options.transport !== undefined && options.transport !== 'tcp' && options.transport !== 'udp') throw new ConfigError(`${what}: transport must be tcp or udp`);

  // The primary is authoritative for the zones it takes updates for: ask it, not a resolver.
  const primary = new Resolver([server], timeoutMs, false);
  const zoneOf = (fqdn: string, signal: AbortSignal) => (zone ? Promise.resolve(zone) : primary.zoneOf(fqdn, signal));

  async function update(change: TxtChange, signal: AbortSignal): Promise<void> {
    const updateZone = await zoneOf(change.name, signal);
    if (change.name !== updateZone && !change.name.endsWith(`.${updateZone}`)) {
      throw new DnsServerError(`${change.name} is not in zone ${updateZone}`, { code: 'ERR_DNS_NOT_IN_ZONE', server: label });
    }
    const id = messageId();
    const unsigned = encodeUpdate(id, updateZone, [change]);
    const signed = key ? tsigSign(unsigned, key, Date.now() / 1000) : { message: unsigned, mac: Buffer.alloc(0) };
    let answer = await exchange(server!, signed.message, { tcp, timeoutMs, signal });
    if (!tcp && answer.length >= 4 && (answer.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) !== 0) {
      answer = await exchange(server!, signed.message, { tcp: true, timeoutMs, signal });
    }
    let decoded: dnsPacket.DecodedPacket;
    try {
      decoded = dnsPacket.decode(answer);
    } catch (error) {
      throw new DnsServerError(`malformed answer from ${label}: ${error instanceof Error ? error.message : String(error)}`, { code: 'ERR_DNS_MALFORMED', server: label });
    }
    if (!decoded.flag_qr || decoded.id !== id || ((decoded.flags ?? 0) >> 11) % 16 !== 5) {
      throw new DnsServerError(`answer from ${label} is not the answer to our update`, { code: 'ERR_DNS_MALFORMED', server: label });
    }
    const rcode = rcodeOf(decoded);
    try {
      if (key) tsigVerify(answer, key, signed.mac, Date.now() / 1000, label);
    } catch (error) {
      // A server that does not speak TSIG refuses with an unsigned FORMERR/NOTIMP: its RCODE says more.
      if (!(error instanceof DnsServerError && error.code === 'ERR_DNS_TSIG_UNSIGNED' && rcode !== 'NOERROR')) throw error;
    }
    if (rcode !== 'NOERROR') {
      const hint = rcode === 'REFUSED' ? ' (is the key allowed to update this zone?)' : rcode === 'NOTAUTH' ? ' (is this the zone\'s primary, and is the key right?)' : '';
      throw new DnsServerError(`${label} refused to ${change.op} TXT at ${change.name} in zone ${updateZone}: ${rcode}${hint}`, { code: 'ERR_DNS_RCODE', rcode, server: label });
    }
  }

  return defineDnsProvider(
    {
      name: 'rfc2136',
      secrets: options.tsigKey?.secret ? [options.tsigKey.secret.trim()] : [],
      add: (record: TxtRecord, signal) => update({ op: 'add', name: record.fqdn, value: record.value, ttl }, signal),
      delete: (record: TxtRecord, signal) => update({ op: 'delete', name: record.fqdn, value: record.value, ttl }, signal),
    },
    options,
  );
}

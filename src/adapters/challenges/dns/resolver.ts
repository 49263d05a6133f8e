/**
 * The few DNS questions DNS-01 needs answered — the zone a name is in, the
 * zone's name servers and their addresses, where a CNAME points, which TXT
 * values a server holds — asked of configured servers over UDP (TCP when the
 * answer is truncated), each question bounded in time.
 */
import dns from 'node:dns';
import net from 'node:net';
import type dnsPacket from 'dns-packet';
import { ConfigError, DnsServerError } from '../../../errors.js';
import { exchange, formatServerAddress, parseServerAddress, type DnsServerAddress } from './transport.js';
import { decodeAnswer, dnsName, encodeQuery, messageId, rcodeOf, txtValues, type DnsMessage } from './wire.js';

/** How one question is asked. */
export interface AskOptions {
  signal?: AbortSignal | undefined;
  /** Ask for recursion (a resolver) or not (an authoritative server). Default true. */
  recursionDesired?: boolean;
}

/** Ask `server` one question; the answer whatever its RCODE. */
export async function ask(server: DnsServerAddress, name: string, type: dnsPacket.RecordType, timeoutMs: number, options: AskOptions = {}): Promise<DnsMessage> {
  const id = messageId();
  const request = encodeQuery(id, name, type, options.recursionDesired ?? true);
  const label = formatServerAddress(server);
  let answer = decodeAnswer(await exchange(server, request, { tcp: false, timeoutMs, signal: options.signal }), { id, name, type }, label);
  if (answer.flag_tc) answer = decodeAnswer(await exchange(server, request, { tcp: true, timeoutMs, signal: options.signal }), { id, name, type }, label);
  return answer;
}

/** RCODEs that are an answer about the name (the others say the server could not answer). */
const ANSWERED = new Set(['NOERROR', 'NXDOMAIN']);

/**
 * Parse server specs (`"192.0.2.1"`, `"192.0.2.1:5353"`, `"[2001:db8::1]:53"`);
 * `undefined` means the system's resolvers (`dns.getServers()`).
 */
export function resolverAddresses(specs: readonly string[] | undefined, what: string): DnsServerAddress[] {
  const list = specs ?? dns.getServers();
  if (list.length === 0) throw new ConfigError(`${what}: no DNS resolvers configured and the system has none`);
  return list.map((spec) => {
    const address = parseServerAddress(spec);
    if (!address) throw new ConfigError(`${what}: ${JSON.stringify(String(spec)).slice(0, 80)} is not an IP address with an optional port`);
    return address;
  });
}

/** Questions asked of a list of servers in order, the next one asked when one cannot answer. */
export class Resolver {
  constructor(
    private readonly servers: readonly DnsServerAddress[],
    private readonly timeoutMs: number,
    private readonly recursionDesired = true,
  ) {}

  /** The first NOERROR/NXDOMAIN answer of the servers in order; the last failure if none answers. */
  async ask(name: string, type: dnsPacket.RecordType, signal?: AbortSignal): Promise<DnsMessage> {
    let failure: unknown;
    for (const server of this.servers) {
      signal?.throwIfAborted();
      try {
        const answer = await ask(server, name, type, this.timeoutMs, { signal, recursionDesired: this.recursionDesired });
        if (ANSWERED.has(rcodeOf(answer))) return answer;
        const rcode = rcodeOf(answer);
        failure = new DnsServerError(`${formatServerAddress(server)} answered ${rcode} for ${name} ${type}`, { code: 'ERR_DNS_RCODE', rcode, server: formatServerAddress(server) });
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        failure = error;
      }
    }
    throw failure;
  }

  /**
   * The zone `name` is in: the closest enclosing name with an SOA record.
   * A negative answer's SOA (authority section) names the zone at once; an
   * SOA in the answer section means the name is the apex.
   */
  async zoneOf(name: string, signal?: AbortSignal): Promise<string> {
    const labels = name.split('.');
    for (let i = 0; i < labels.length; i++) {
      const candidate = labels.slice(i).join('.');
      const answer = await this.ask(candidate, 'SOA', signal);
      // A CNAME here means the SOA beside it is the target's zone, not this name's.
      if (records(answer.answers, 'CNAME', candidate).length > 0) continue;
      if (records(answer.answers, 'SOA', candidate).length > 0) return candidate;
      const soa = (answer.authorities ?? []).find((r) => r.type === 'SOA');
      const zone = soa && dnsName(soa.name);
      if (zone && (name === zone || name.endsWith(`.${zone}`))) return zone;
    }
    throw new DnsServerError(`no zone (SOA) found for ${name}`, { code: 'ERR_DNS_NO_ZONE' });
  }

  /** The zone's name servers (NS record targets). */
  async nameserversOf(zone: string, signal?: AbortSignal): Promise<string[]> {
    const answer = await this.ask(zone, 'NS', signal);
    const hosts = records(answer.answers, 'NS', zone).map((r) => dnsName(String(dataOf(r))));
    return [...new Set(hosts.filter((h): h is string => h !== undefined))];
  }

  /** IPv4 addresses of `host`, else its IPv6 ones. */
  async addressesOf(host: string, signal?: AbortSignal): Promise<string[]> {
    for (const type of ['A', 'AAAA'] as const) {
      const answer = await this.ask(host, type, signal);
      const found = (answer.answers ?? []).filter((r) => r.type === type && net.isIP(String(dataOf(r)))).map((r) => String(dataOf(r)));
      if (found.length > 0) return found;
    }
    return [];
  }

  /** Where `name` points when it is a CNAME, else `undefined`. */
  async cnameOf(name: string, signal?: AbortSignal): Promise<string | undefined> {
    const answer = await this.ask(name, 'CNAME', signal);
    const cname = records(answer.answers, 'CNAME', name)[0];
    if (!cname) return undefined;
    const target = dnsName(String(dataOf(cname)));
    if (!target) throw new DnsServerError(`CNAME of ${name} points to an unusable name`, { code: 'ERR_DNS_MALFORMED' });
    return target;
  }
}

/** A record's data (absent only on OPT pseudo-records). */
function dataOf(record: dnsPacket.Answer): unknown {
  return 'data' in record ? record.data : undefined;
}

/** Records of `type` owned by `name` in a section. */
function records(section: dnsPacket.Answer[] | undefined, type: string, name: string): dnsPacket.Answer[] {
  return (section ?? []).filter((r) => r.type === type && r.name.toLowerCase() === name);
}

/** TXT values `server` holds at `name`, asked without recursion (the server must be authoritative). */
export async function authoritativeTxt(server: DnsServerAddress, name: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  const answer = await ask(server, name, 'TXT', timeoutMs, { signal, recursionDesired: false });
  const rcode = rcodeOf(answer);
  if (!ANSWERED.has(rcode)) {
    throw new DnsServerError(`answered ${rcode}`, { code: 'ERR_DNS_RCODE', rcode, server: formatServerAddress(server) });
  }
  return txtValues(answer, name);
}

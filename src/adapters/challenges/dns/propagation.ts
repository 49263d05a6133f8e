/**
 * The propagation check every provider shares: before the CA is told to
 * look, every authoritative server of the record's zone must answer the TXT
 * value. The CA's resolvers ask one of them, at random; a value on the
 * primary but not yet on a secondary fails validation as surely as a
 * missing one, and a failed validation costs a failed authorization at the
 * CA, which counts against its limits. Checking here costs one UDP question
 * per server per interval.
 *
 * Zone, name servers and addresses are found once per check through the
 * configured resolvers; then each server is asked directly, without
 * recursion (no cache in between), until all answer the value or the
 * timeout passes — then `DnsPropagationError` names each server still
 * lagging and why.
 */
import type { Logger } from '../../../types.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, DnsPropagationError } from '../../../errors.js';
import { formatServerAddress, parseServerAddress, type DnsServerAddress } from './transport.js';
import { authoritativeTxt } from './resolver.js';

/** Options of the propagation check (`propagation` of every provider). */
export interface PropagationOptions {
  /** Give up (with `DnsPropagationError`) after this long, ms. Default 120 000. */
  timeoutMs?: number;
  /** Time between rounds of questions, ms. Default 2 000. */
  intervalMs?: number;
  /** Timeout of each question, ms. Default 3 000. */
  queryTimeoutMs?: number;
  /**
   * Ask these servers (`"192.0.2.1"`, `"192.0.2.1:5353"`) instead of the
   * zone's NS records: for hidden primaries or split-horizon set-ups where
   * the public name servers are not what the CA asks.
   */
  nameservers?: string[];
  /**
   * Port of the zone's name servers found through NS records. Default 53;
   * other values are for test set-ups that serve a zone on a high port.
   */
  nameserverPort?: number;
}

/** The lookups the check needs (a `Resolver`). */
export interface ZoneLookups {
  zoneOf(name: string, signal?: AbortSignal): Promise<string>;
  nameserversOf(zone: string, signal?: AbortSignal): Promise<string[]>;
  addressesOf(host: string, signal?: AbortSignal): Promise<string[]>;
}

/** One server the check waits for. */
interface Authority {
  label: string;
  addresses: DnsServerAddress[];
}

/** The propagation options with their defaults. */
export interface PropagationSettings {
  timeoutMs: number;
  intervalMs: number;
  queryTimeoutMs: number;
  nameservers?: DnsServerAddress[];
  nameserverPort: number;
}

/** Validate options and fill in defaults. */
export function propagationSettings(options: PropagationOptions, what: string): PropagationSettings {
  for (const key of ['timeoutMs', 'intervalMs', 'queryTimeoutMs'] as const) {
    const v = options[key];
    if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new ConfigError(`${what}: propagation.${key} must be a positive number`);
  }
  const port = options.nameserverPort ?? 53;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${what}: propagation.nameserverPort must be a port number`);
  const settings: PropagationSettings = {
    timeoutMs: options.timeoutMs ?? 120_000,
    intervalMs: options.intervalMs ?? 2_000,
    queryTimeoutMs: options.queryTimeoutMs ?? 3_000,
    nameserverPort: port,
  };
  if (options.nameservers !== undefined) {
    settings.nameservers = options.nameservers.map((spec) => {
      const address = parseServerAddress(spec);
      if (!address) throw new ConfigError(`${what}: propagation.nameservers entry ${JSON.stringify(String(spec)).slice(0, 80)} is not an IP address with an optional port`);
      return address;
    });
    if (settings.nameservers.length === 0) throw new ConfigError(`${what}: propagation.nameservers must not be empty`);
  }
  return settings;
}

/** The authoritative servers of the zone `fqdn` is in (or the configured ones). */
async function authoritiesOf(fqdn: string, resolverOf: () => ZoneLookups, settings: PropagationSettings, signal: AbortSignal): Promise<Authority[]> {
  if (settings.nameservers) return settings.nameservers.map((address) => ({ label: formatServerAddress(address), addresses: [address] }));
  const resolver = resolverOf();
  const zone = await resolver.zoneOf(fqdn, signal);
  const hosts = await resolver.nameserversOf(zone, signal);
  if (hosts.length === 0) throw new DnsPropagationError(fqdn, [`zone ${zone} has no NS records`], 0, { code: 'ERR_DNS_NO_NAMESERVERS' });
  return Promise.all(
    hosts.map(async (host) => {
      const addresses = (await resolver.addressesOf(host, signal)).map((ip) => ({ host: ip, port: settings.nameserverPort }));
      return { label: host, addresses };
    }),
  );
}

/** Whether one server answers `value` now: `undefined` if so, else why not. */
async function lagOf(authority: Authority, fqdn: string, value: string, settings: PropagationSettings, signal: AbortSignal): Promise<string | undefined> {
  if (authority.addresses.length === 0) return `${authority.label}: no address`;
  let why = '';
  // An NS with several addresses is up to date when one of them answers the value (they are one server).
  for (const address of authority.addresses) {
    try {
      const values = await authoritativeTxt(address, fqdn, settings.queryTimeoutMs, signal);
      if (values.includes(value)) return undefined;
      why = `answers ${values.length === 0 ? 'no TXT value' : `${values.length} other TXT value(s)`}`;
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      why = error instanceof Error ? error.message : String(error);
    }
  }
  const where = authority.addresses.map(formatServerAddress).join(', ');
  return authority.label === where ? `${where}: ${why}` : `${authority.label} (${where}): ${why}`;
}

/**
 * Resolve once every authoritative server of `fqdn`'s zone answers `value`
 * at `fqdn`; reject with `DnsPropagationError` after `timeoutMs`, or with the
 * signal's reason when it aborts.
 */
export async function waitForTxt(fqdn: string, value: string, resolver: () => ZoneLookups, settings: PropagationSettings, signal: AbortSignal, logger?: Logger): Promise<void> {
  const deadline = Date.now() + settings.timeoutMs;
  const authorities = await authoritiesOf(fqdn, resolver, settings, signal);
  let pending = authorities;
  let lagging: string[] = [];
  for (let round = 0; ; round++) {
    const results = await Promise.all(pending.map(async (a) => ({ a, lag: await lagOf(a, fqdn, value, settings, signal) })));
    pending = results.filter((r) => r.lag !== undefined).map((r) => r.a);
    lagging = results.flatMap((r) => (r.lag === undefined ? [] : [r.lag]));
    if (pending.length === 0) {
      logger?.debug({ fqdn, servers: authorities.length, rounds: round + 1 }, 'DNS-01 TXT value visible on every authoritative server');
      return;
    }
    const wait = Math.min(settings.intervalMs, deadline - Date.now());
    if (wait <= 0) throw new DnsPropagationError(fqdn, lagging, settings.timeoutMs);
    logger?.debug({ fqdn, lagging: pending.map((a) => a.label) }, 'DNS-01 TXT value not yet visible everywhere');
    // Rejects with an AbortError; the provider turns it into the signal's reason.
    await sleep(wait, undefined, { signal });
  }
}

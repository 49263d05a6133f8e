/**
 * What every DNS-01 provider shares, around a backend that only knows how to
 * add and delete one TXT value (`TxtRecordWriter`):
 *
 * 1. **Delegation**: `_acme-challenge.<name>` may be a CNAME; the value is
 *    written where the chain ends (`followCname`, default on).
 * 2. **Propagation**: `waitForPropagation` polls every authoritative server
 *    of the zone until all answer the value (`propagation`, default on).
 * 3. **Bounds**: each backend call has a timeout (`requestTimeoutMs`);
 *    removal, which runs after an abandoned attempt without a signal, too.
 * 4. **Secrets**: every error leaving a provider is scrubbed of the
 *    backend's credentials (an API echoing a token, a script printing its
 *    environment); errors from SDKs are replaced, never wrapped, since their
 *    fields can hold request headers.
 * 5. **Pairing**: `remove` withdraws the value from the name `set` wrote it
 *    to, even if the CNAME changed in between.
 */
import { ConfigError, DnsError, DnsProviderError } from '../../../errors.js';
import type { Logger } from '../../../types.js';
import type { DnsProvider, DnsProviderCallOptions } from '../dns-01.js';
import { delegatedName } from './delegation.js';
import { propagationSettings, waitForTxt, type PropagationOptions } from './propagation.js';
import { Resolver, resolverAddresses } from './resolver.js';
import { dnsName } from './wire.js';

/** One TXT value at one name, as a backend is asked to write or delete it. */
export interface TxtRecord {
  /** Where the value is written: `challengeName`, or the end of its CNAME chain. No trailing dot. */
  fqdn: string;
  /** The name the CA asked about: `_acme-challenge.<name>`. No trailing dot. */
  challengeName: string;
  /** The TXT value (the key authorization's digest, base64url). */
  value: string;
}

/**
 * A DNS backend: adds and deletes single TXT values. Implement this to plug
 * any DNS system into `defineDnsProvider` and get delegation, propagation,
 * timeouts and secret scrubbing for free.
 */
export interface TxtRecordWriter {
  /** Short name for errors and logs (`rfc2136`, `cloudflare`, …). */
  readonly name: string;
  /** Values that must never appear in an error message (API tokens, passwords, secrets). */
  readonly secrets?: readonly string[];
  /** Add `record.value` at `record.fqdn`, keeping other values there. Adding a value already there is not an error. */
  add(record: TxtRecord, signal: AbortSignal): Promise<void>;
  /** Delete exactly `record.value` at `record.fqdn`. A value that is not there is not an error. */
  delete(record: TxtRecord, signal: AbortSignal): Promise<void>;
}

/** Options every provider takes. */
export interface DnsProviderOptions {
  /**
   * Follow a CNAME at `_acme-challenge.<name>` and write the value where it
   * points (the acme-dns pattern, as lego and certbot do). Default `true`.
   */
  followCname?: boolean;
  /** The propagation check before the CA is told; `false` turns it off. Default `{}` (on, with its defaults). */
  propagation?: PropagationOptions | false;
  /**
   * Resolvers for finding CNAMEs, zones and name servers (`"192.0.2.1"`,
   * `"192.0.2.1:5353"`, `"[2001:db8::1]:53"`). Default: the system's
   * (`dns.getServers()`).
   */
  resolvers?: string[];
  /** Timeout of each backend call (one add or delete), ms. Default 30 000. */
  requestTimeoutMs?: number;
  /** A pino logger for debug lines (where a value went, propagation progress). Default: none. */
  logger?: Logger;
}

/** Remembered targets of values set and not yet removed; beyond this the oldest is forgotten (remove then resolves again). */
const MAX_REMEMBERED = 10_000;
const VALUE = /^[\x21-\x7e]{1,255}$/;

/** Shorter values (`ZONE=test`) are not scrubbed: they would blank out ordinary words, and no credential is that short. */
const MIN_SECRET_LENGTH = 8;

/** Replace every occurrence of each secret in `text`. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= MIN_SECRET_LENGTH) out = out.split(secret).join('[redacted]');
  return out;
}

/**
 * The ID of the closest zone enclosing `fqdn` that `lookup` finds, asked from
 * `fqdn` up to its parent domain (API-hosted zones need no DNS to be found).
 */
export async function closestZone(fqdn: string, cache: Map<string, string>, lookup: (candidate: string) => Promise<string | undefined>): Promise<string | undefined> {
  const labels = fqdn.split('.');
  for (let i = 0; i < labels.length - 1; i++) {
    const candidate = labels.slice(i).join('.');
    const id = cache.get(candidate) ?? (await lookup(candidate));
    if (id !== undefined) {
      cache.set(candidate, id);
      return id;
    }
  }
  return undefined;
}

/**
 * A `DnsProvider` from a backend. Throws `ConfigError` for bad options.
 *
 * @example
 * const provider = defineDnsProvider({ name: 'my-dns', add: ..., delete: ... }, { resolvers: ['192.0.2.53'] });
 */
export function defineDnsProvider(writer: TxtRecordWriter, options: DnsProviderOptions = {}): DnsProvider {
  const what = `${writer.name} DNS provider`;
  const followCname = options.followCname ?? true;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  if (!(Number.isFinite(requestTimeoutMs) && requestTimeoutMs > 0)) throw new ConfigError(`${what}: requestTimeoutMs must be a positive number`);
  const propagation = options.propagation === false ? undefined : propagationSettings(options.propagation ?? {}, what);
  const needsResolver = followCname || (propagation !== undefined && propagation.nameservers === undefined);
  // Resolvers are read when first needed: a provider built at start-up follows later changes to the system's.
  let resolver: Resolver | undefined;
  const getResolver = () => (resolver ??= new Resolver(resolverAddresses(options.resolvers, what), propagation?.queryTimeoutMs ?? 3_000));
  if (needsResolver && options.resolvers !== undefined) getResolver();
  const secrets = [...(writer.secrets ?? [])];
  const logger = options.logger;
  const targets = new Map<string, string>();

  /** Errors out of the provider: scrubbed of secrets; foreign errors replaced by our type. */
  function clean(error: unknown, signal: AbortSignal | undefined, timeout: AbortSignal | undefined): unknown {
    // The caller's abort wins over whatever the backend threw on its way out (an SDK's own abort error).
    if (signal?.aborted) return signal.reason;
    if (timeout?.aborted && !signal?.aborted) {
      return new DnsProviderError(`${writer.name}: no answer within ${requestTimeoutMs} ms`, { code: 'ERR_DNS_TIMEOUT', provider: writer.name });
    }
    if (error instanceof DnsError || error instanceof ConfigError) {
      for (const key of ['message', 'stack'] as const) {
        const text = error[key];
        if (typeof text === 'string') Object.defineProperty(error, key, { value: scrubSecrets(text, secrets), writable: true, configurable: true });
      }
      if (error instanceof DnsError && error.provider === undefined) Object.defineProperty(error, 'provider', { value: writer.name, enumerable: true });
      return error;
    }
    const message = error instanceof Error ? error.message : String(error);
    return new DnsProviderError(`${writer.name}: ${scrubSecrets(message, secrets).slice(0, 500)}`, { provider: writer.name });
  }

  function check(fqdn: string, value: string): string {
    const name = dnsName(fqdn);
    if (!name) throw new DnsError(`not a DNS name: ${JSON.stringify(String(fqdn)).slice(0, 100)}`, { code: 'ERR_DNS_BAD_NAME', provider: writer.name });
    if (typeof value !== 'string' || !VALUE.test(value)) throw new DnsError('TXT value must be 1–255 printable ASCII characters', { code: 'ERR_DNS_BAD_VALUE', provider: writer.name });
    return name;
  }

  /** Run one backend call under its timeout and the caller's signal. */
  async function call(run: (signal: AbortSignal) => Promise<void>, signal: AbortSignal | undefined): Promise<void> {
    const timeout = AbortSignal.timeout(requestTimeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      combined.throwIfAborted();
      await run(combined);
    } catch (error) {
      throw clean(error, signal, timeout);
    }
  }

  async function targetOf(challengeName: string, signal: AbortSignal | undefined): Promise<string> {
    if (!followCname) return challengeName;
    try {
      return await delegatedName(challengeName, getResolver(), signal);
    } catch (error) {
      throw clean(error, signal, undefined);
    }
  }

  const key = (name: string, value: string) => `${name} ${value}`;

  return {
    async set(fqdn: string, value: string, callOptions?: DnsProviderCallOptions): Promise<void> {
      const challengeName = check(fqdn, value);
      const target = await targetOf(challengeName, callOptions?.signal);
      // Remembered before writing: an add that times out may still land, and remove must find it.
      targets.delete(key(challengeName, value));
      targets.set(key(challengeName, value), target);
      if (targets.size > MAX_REMEMBERED) targets.delete(targets.keys().next().value!);
      await call((signal) => writer.add({ fqdn: target, challengeName, value }, signal), callOptions?.signal);
      logger?.debug({ provider: writer.name, fqdn: challengeName, ...(target !== challengeName ? { delegatedTo: target } : {}) }, 'DNS-01 TXT value added');
    },

    async remove(fqdn: string, value: string, callOptions?: DnsProviderCallOptions): Promise<void> {
      const challengeName = check(fqdn, value);
      const target = targets.get(key(challengeName, value)) ?? (await targetOf(challengeName, callOptions?.signal));
      await call((signal) => writer.delete({ fqdn: target, challengeName, value }, signal), callOptions?.signal);
      targets.delete(key(challengeName, value));
      logger?.debug({ provider: writer.name, fqdn: challengeName }, 'DNS-01 TXT value removed');
    },

    ...(propagation
      ? {
          async waitForPropagation(fqdn: string, value: string, callOptions?: DnsProviderCallOptions): Promise<void> {
            const challengeName = check(fqdn, value);
            const target = targets.get(key(challengeName, value)) ?? (await targetOf(challengeName, callOptions?.signal));
            const signal = callOptions?.signal ?? new AbortController().signal;
            try {
              await waitForTxt(target, value, getResolver, propagation, signal, logger);
            } catch (error) {
              throw clean(error, signal, undefined);
            }
          },
        }
      : {}),
  };
}

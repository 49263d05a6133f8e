/**
 * Cloudflare DNS through Cloudflare's official SDK (`cloudflare`, an
 * optional peer dependency loaded at the first call). One TXT record per
 * value: Cloudflare keeps several records of one name side by side, so
 * adding never touches another value, and deleting lists the records with
 * exactly this name and content and deletes those.
 *
 * The zone is found through the API (the longest zone name the token can see
 * that encloses the record), unless `zoneId` is given. Token permissions:
 * Zone → Zone → Read and Zone → DNS → Edit, for the zones concerned.
 *
 * Contract-tested against a local server implementing the documented
 * endpoints used; not run against the real Cloudflare API here.
 */
import type CloudflareClient from 'cloudflare';
import { ConfigError, DnsProviderError } from '../../../errors.js';
import type { DnsProvider } from '../dns-01.js';
import { closestZone, defineDnsProvider, type DnsProviderOptions, type TxtRecord } from './provider.js';
import { dnsName } from './wire.js';

/** Options of `cloudflareDnsProvider`. */
export interface CloudflareDnsProviderOptions extends DnsProviderOptions {
  /** A scoped API token with Zone:Read and DNS:Edit on the zones concerned. */
  apiToken: string;
  /** The zone's ID, to skip looking it up (then the token needs only DNS:Edit). */
  zoneId?: string;
  /** TTL of added records, seconds (1 = automatic). Default 60. */
  ttl?: number;
  /** The API's base URL. Default the SDK's (`https://api.cloudflare.com/client/v4`). */
  baseUrl?: string;
}

/** Answer of an SDK call that failed, for our message (never the SDK error object itself). */
function describeSdkError(error: unknown): { message: string; status?: number } {
  const e = error as { status?: unknown; errors?: unknown; message?: unknown; name?: unknown };
  const status = typeof e.status === 'number' ? e.status : undefined;
  const details = Array.isArray(e.errors)
    ? e.errors.map((x: { code?: unknown; message?: unknown }) => `${String(x.code ?? '')} ${String(x.message ?? '')}`.trim()).join('; ')
    : typeof e.message === 'string' ? e.message : String(error);
  return { message: details.slice(0, 500), ...(status !== undefined ? { status } : {}) };
}

/** Cloudflare's "an identical record already exists" codes. */
const IDENTICAL_RECORD = new Set([81057, 81058]);

/** TXT content as Cloudflare may hand it back: quoted or not. */
const unquote = (content: string | undefined) => (content ?? '').replace(/^"(.*)"$/, '$1');

/**
 * A `DnsProvider` writing TXT records through the Cloudflare API. Throws
 * `ConfigError` for bad options.
 *
 * @example
 * cloudflareDnsProvider({ apiToken: process.env.CLOUDFLARE_API_TOKEN! })
 */
export function cloudflareDnsProvider(options: CloudflareDnsProviderOptions): DnsProvider {
  const what = 'cloudflareDnsProvider';
  if (typeof options?.apiToken !== 'string' || options.apiToken.length < 8) throw new ConfigError(`${what}: apiToken is required`);
  const ttl = options.ttl ?? 60;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 86_400) throw new ConfigError(`${what}: ttl must be whole seconds between 1 and 86400`);
  if (options.baseUrl !== undefined && !/^https?:\/\//.test(options.baseUrl)) throw new ConfigError(`${what}: baseUrl must be an http(s) URL`);
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;

  let client: Promise<CloudflareClient> | undefined;
  const clientOf = () =>
    (client ??= import('cloudflare').then(
      ({ default: Cloudflare }) =>
        // Explicit nulls: the SDK would otherwise pick up CLOUDFLARE_API_KEY & co. from the environment.
        new Cloudflare({ apiToken: options.apiToken, apiKey: null, apiEmail: null, userServiceKey: null, maxRetries: 0, timeout: requestTimeoutMs, ...(options.baseUrl ? { baseURL: options.baseUrl } : {}) }),
      () => {
        client = undefined;
        throw new DnsProviderError(`${what} needs the cloudflare package: npm install cloudflare`, { code: 'ERR_DNS_SDK_MISSING', provider: 'cloudflare' });
      },
    ));
  const zones = new Map<string, string>();

  /** Run an SDK call; its errors become ours (never wrapped: SDK errors carry request details). */
  async function sdk<T>(step: string, run: (cf: CloudflareClient) => Promise<T>, signal: AbortSignal): Promise<T> {
    const cf = await clientOf();
    try {
      return await run(cf);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const { message, status } = describeSdkError(error);
      throw Object.assign(new DnsProviderError(`cloudflare ${step}: ${status !== undefined ? `HTTP ${status}: ` : ''}${message}`, { provider: 'cloudflare', ...(status !== undefined ? { status } : {}) }), {
        apiCodes: Array.isArray((error as { errors?: unknown }).errors) ? (error as { errors: Array<{ code?: number }> }).errors.map((e) => e.code) : [],
      });
    }
  }

  async function zoneIdOf(fqdn: string, signal: AbortSignal): Promise<string> {
    if (options.zoneId) return options.zoneId;
    const id = await closestZone(fqdn, zones, async (candidate) => {
      const page = await sdk('zone lookup', (cf) => cf.zones.list({ name: candidate }, { signal }), signal);
      return page.result.find((z) => dnsName(z.name) === candidate)?.id;
    });
    if (id === undefined) throw new DnsProviderError(`cloudflare: no zone the token can see encloses ${fqdn}`, { code: 'ERR_DNS_NO_ZONE', provider: 'cloudflare' });
    return id;
  }

  async function recordsOf(zoneId: string, record: TxtRecord, signal: AbortSignal): Promise<string[]> {
    const ids: string[] = [];
    const page = await sdk('record lookup', (cf) => cf.dns.records.list({ zone_id: zoneId, type: 'TXT', name: { exact: record.fqdn }, content: { exact: record.value } }, { signal }), signal);
    for (const r of page.result) if (dnsName(r.name) === record.fqdn && unquote(r.content) === record.value) ids.push(r.id);
    return ids;
  }

  return defineDnsProvider(
    {
      name: 'cloudflare',
      secrets: [options.apiToken],
      async add(record, signal) {
        const zoneId = await zoneIdOf(record.fqdn, signal);
        try {
          await sdk('create record', (cf) => cf.dns.records.create({ zone_id: zoneId, type: 'TXT', name: record.fqdn, content: record.value, ttl }, { signal }), signal);
        } catch (error) {
          const codes = (error as { apiCodes?: number[] }).apiCodes ?? [];
          if (!codes.some((c) => IDENTICAL_RECORD.has(c))) throw error;
        }
      },
      async delete(record, signal) {
        const zoneId = await zoneIdOf(record.fqdn, signal);
        for (const id of await recordsOf(zoneId, record, signal)) {
          // Already gone (a concurrent cleanup) is what we wanted.
          await sdk('delete record', (cf) => cf.dns.records.delete(id, { zone_id: zoneId }, { signal }), signal).catch((error: unknown) => {
            if (!(error instanceof DnsProviderError && error.status === 404)) throw error;
          });
        }
      },
    },
    { ...options, requestTimeoutMs },
  );
}

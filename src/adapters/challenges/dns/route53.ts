/**
 * Amazon Route 53 through the official AWS SDK v3
 * (`@aws-sdk/client-route-53`, an optional peer dependency loaded at the
 * first call).
 *
 * Route 53 keeps all values of a name and type in one record set, so adding
 * or removing one value rewrites the set. It is done optimistically: one
 * change batch that DELETEs the set exactly as read and CREATEs the new one.
 * Route 53 applies a batch atomically and refuses it when the set changed in
 * between (another process adding its value), and then we read and try
 * again — so two values added at once, from one process or two, both stand.
 * Then the change is awaited until Route 53 reports it `INSYNC` on all its
 * servers.
 *
 * IAM permissions: `route53:ListHostedZonesByName` (unless `hostedZoneId` is
 * given), `route53:ListResourceRecordSets`, `route53:ChangeResourceRecordSets`
 * and `route53:GetChange`.
 *
 * Contract-tested against a local server implementing the documented
 * endpoints used; not run against the real Route 53 here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Route53Client, ResourceRecordSet, Change } from '@aws-sdk/client-route-53';
import { ConfigError, DnsProviderError } from '../../../errors.js';
import type { DnsProvider } from '../dns-01.js';
import { closestZone, defineDnsProvider, type DnsProviderOptions, type TxtRecord } from './provider.js';
import { dnsName } from './wire.js';

/** Options of `route53DnsProvider`. */
export interface Route53DnsProviderOptions extends DnsProviderOptions {
  /** The hosted zone's ID, to skip looking it up. */
  hostedZoneId?: string;
  /** Static credentials. Default: the SDK's default chain (environment, shared config, instance or task role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** AWS region for the client. Default `us-east-1` (Route 53 is global). */
  region?: string;
  /** The API endpoint. Default the SDK's. */
  endpoint?: string;
  /** TTL of the record set, seconds. Default 60. */
  ttl?: number;
  /** Time between `GetChange` polls while waiting for `INSYNC`, ms. Default 2 000. */
  changePollMs?: number;
}

/** Change batches retried at most this often after a concurrent change. */
const MAX_CONFLICT_RETRIES = 5;

const quote = (value: string) => `"${value}"`;
const unquote = (value: string | undefined) => (value ?? '').replace(/^"(.*)"$/, '$1');

/**
 * A `DnsProvider` writing TXT records through the Route 53 API. Throws
 * `ConfigError` for bad options.
 *
 * @example
 * route53DnsProvider({ hostedZoneId: 'Z0123456789ABCDEFGHIJ' }) // credentials from the environment or the instance role
 */
export function route53DnsProvider(options: Route53DnsProviderOptions = {}): DnsProvider {
  const what = 'route53DnsProvider';
  const ttl = options.ttl ?? 60;
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 86_400) throw new ConfigError(`${what}: ttl must be whole seconds between 0 and 86400`);
  const c = options.credentials;
  if (c !== undefined && (typeof c.accessKeyId !== 'string' || typeof c.secretAccessKey !== 'string')) throw new ConfigError(`${what}: credentials need accessKeyId and secretAccessKey`);
  const changePollMs = options.changePollMs ?? 2_000;
  // A change takes up to a minute to be INSYNC: that wait is part of each call.
  const requestTimeoutMs = options.requestTimeoutMs ?? 180_000;

  type Sdk = typeof import('@aws-sdk/client-route-53');
  let loaded: Promise<{ sdk: Sdk; client: Route53Client }> | undefined;
  const load = () =>
    (loaded ??= import('@aws-sdk/client-route-53').then(
      (sdk) => ({
        sdk,
        client: new sdk.Route53Client({
          region: options.region ?? 'us-east-1',
          maxAttempts: 1,
          ...(options.endpoint ? { endpoint: options.endpoint } : {}),
          ...(c ? { credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}) } } : {}),
        }),
      }),
      () => {
        loaded = undefined;
        throw new DnsProviderError(`${what} needs @aws-sdk/client-route-53: npm install @aws-sdk/client-route-53`, { code: 'ERR_DNS_SDK_MISSING', provider: 'route53' });
      },
    ));

  /** One API call; SDK errors become ours (never wrapped: they can carry the signed request). */
  async function call<T>(step: string, make: (sdk: Sdk) => object, signal: AbortSignal): Promise<T> {
    const { sdk, client } = await load();
    try {
      // Each command's own input/output types do not unify with the client's union of them.
      return (await client.send(make(sdk) as never, { abortSignal: signal })) as T;
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const e = error as { name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: unknown } };
      const status = typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined;
      const name = typeof e.name === 'string' ? e.name : 'Error';
      throw new DnsProviderError(`route53 ${step}: ${name}${typeof e.message === 'string' ? `: ${e.message.slice(0, 300)}` : ''}`, {
        code: name === 'InvalidChangeBatch' || name === 'PriorRequestNotComplete' ? 'ERR_DNS_CONFLICT' : 'ERR_DNS_PROVIDER',
        provider: 'route53',
        ...(status !== undefined ? { status } : {}),
      });
    }
  }

  const zones = new Map<string, string>();
  async function zoneIdOf(fqdn: string, signal: AbortSignal): Promise<string> {
    if (options.hostedZoneId) return options.hostedZoneId;
    const id = await closestZone(fqdn, zones, async (candidate) => {
      const answer = await call<{ HostedZones?: Array<{ Id?: string; Name?: string; Config?: { PrivateZone?: boolean } }> }>(
        'zone lookup',
        (sdk) => new sdk.ListHostedZonesByNameCommand({ DNSName: candidate, MaxItems: 1 }),
        signal,
      );
      // Listed in order from DNSName on: the first may be another zone.
      const zone = (answer.HostedZones ?? []).find((z) => dnsName(z.Name ?? '') === candidate && !z.Config?.PrivateZone);
      return zone?.Id?.replace(/^\/hostedzone\//, '');
    });
    if (id === undefined) throw new DnsProviderError(`route53: no public hosted zone encloses ${fqdn}`, { code: 'ERR_DNS_NO_ZONE', provider: 'route53' });
    return id;
  }

  async function currentSet(zoneId: string, fqdn: string, signal: AbortSignal): Promise<ResourceRecordSet | undefined> {
    const answer = await call<{ ResourceRecordSets?: ResourceRecordSet[] }>(
      'record lookup',
      (sdk) => new sdk.ListResourceRecordSetsCommand({ HostedZoneId: zoneId, StartRecordName: fqdn, StartRecordType: 'TXT', MaxItems: 1 }),
      signal,
    );
    return (answer.ResourceRecordSets ?? []).find((s) => s.Type === 'TXT' && dnsName(s.Name ?? '') === fqdn && s.SetIdentifier === undefined);
  }

  async function awaitInSync(changeId: string, signal: AbortSignal): Promise<void> {
    for (;;) {
      const answer = await call<{ ChangeInfo?: { Status?: string } }>('change status', (sdk) => new sdk.GetChangeCommand({ Id: changeId }), signal);
      if (answer.ChangeInfo?.Status === 'INSYNC') return;
      await sleep(changePollMs, undefined, { signal });
    }
  }

  /** Rewrite the record set of `record.fqdn` with `change(values)`, retrying after a concurrent change. */
  async function rewrite(record: TxtRecord, change: (values: string[]) => string[] | undefined, signal: AbortSignal): Promise<void> {
    const zoneId = await zoneIdOf(record.fqdn, signal);
    for (let attempt = 0; ; attempt++) {
      const current = await currentSet(zoneId, record.fqdn, signal);
      const values = (current?.ResourceRecords ?? []).map((r) => unquote(r.Value));
      const next = change(values);
      if (next === undefined) return;
      const changes: Change[] = [];
      if (current) changes.push({ Action: 'DELETE', ResourceRecordSet: current });
      if (next.length > 0) changes.push({ Action: 'CREATE', ResourceRecordSet: { Name: `${record.fqdn}.`, Type: 'TXT', TTL: ttl, ResourceRecords: next.map((v) => ({ Value: quote(v) })) } });
      try {
        const answer = await call<{ ChangeInfo?: { Id?: string } }>(
          'change',
          (sdk) => new sdk.ChangeResourceRecordSetsCommand({ HostedZoneId: zoneId, ChangeBatch: { Comment: 'certstate DNS-01', Changes: changes } }),
          signal,
        );
        if (answer.ChangeInfo?.Id) await awaitInSync(answer.ChangeInfo.Id, signal);
        return;
      } catch (error) {
        if (!(error instanceof DnsProviderError && error.code === 'ERR_DNS_CONFLICT') || attempt >= MAX_CONFLICT_RETRIES) throw error;
        await sleep(100 * 2 ** attempt * (0.5 + Math.random()), undefined, { signal });
      }
    }
  }

  return defineDnsProvider(
    {
      name: 'route53',
      secrets: c ? [c.secretAccessKey, ...(c.sessionToken ? [c.sessionToken] : [])] : [],
      add: (record, signal) => rewrite(record, (values) => (values.includes(record.value) ? undefined : [...values, record.value]), signal),
      delete: (record, signal) => rewrite(record, (values) => (values.includes(record.value) ? values.filter((v) => v !== record.value) : undefined), signal),
    },
    { ...options, requestTimeoutMs },
  );
}

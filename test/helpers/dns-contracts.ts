/**
 * Local stand-ins for the DNS APIs certstate's providers call and that
 * cannot be reached from here: each implements the documented endpoints the
 * provider uses, with the documented request and answer shapes and error
 * behaviour, and keeps the records so a test can read them back. The real
 * SDKs (`cloudflare`, `@aws-sdk/client-route-53`) talk to them unchanged,
 * only their base URL pointed here.
 *
 * - acme-dns: `POST /register`, `POST /update` (github.com/joohoi/acme-dns README).
 * - Cloudflare API v4: `GET /zones`, `GET|POST /zones/:zone/dns_records`,
 *   `DELETE /zones/:zone/dns_records/:id` (developers.cloudflare.com/api).
 * - Route 53 (2013-04-01, REST-XML): `ListHostedZonesByName`,
 *   `ListResourceRecordSets`, `ChangeResourceRecordSets` (atomic; a refused
 *   batch is an `ErrorResponse` with code `InvalidChangeBatch`, the form
 *   Route 53 answers with since 2024), `GetChange`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { parseXML } from '@aws-sdk/xml-builder';

/** A running stand-in. */
export interface ContractServer {
  readonly url: string;
  /** `METHOD /path` of each request, in order. */
  readonly requests: string[];
  close(): Promise<void>;
}

async function serve(handler: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void): Promise<Omit<ContractServer, 'url'> & { port: number }> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      requests.push(`${req.method} ${new URL(req.url ?? '/', 'http://x').pathname}`);
      handler(req, body, res);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    requests,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// ─── acme-dns ──────────────────────────────────────────────────────────────

export interface AcmeDnsContract extends ContractServer {
  /** The account of `domain`, registered on first ask (as `POST /register` would). */
  accountFor(domain: string): { username: string; password: string; subdomain: string; fulldomain: string };
  /** Values the server holds for the account of `domain` (the two newest). */
  values(domain: string): string[];
}

export async function startAcmeDnsContract(zone = 'auth.acme-dns.test'): Promise<AcmeDnsContract> {
  const accounts = new Map<string, { username: string; password: string; subdomain: string; fulldomain: string }>();
  const byDomain = new Map<string, string>();
  const txt = new Map<string, string[]>();
  const register = () => {
    const subdomain = randomUUID();
    const account = { username: randomUUID(), password: randomBytes(30).toString('base64url'), subdomain, fulldomain: `${subdomain}.${zone}` };
    accounts.set(account.username, account);
    return account;
  };
  const base = await serve((req, body, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'POST' && path === '/register') return json(res, 201, { ...register(), allowfrom: [] });
    if (req.method !== 'POST' || path !== '/update') return json(res, 404, { error: 'not_found' });
    const account = accounts.get(String(req.headers['x-api-user'] ?? ''));
    if (!account || account.password !== req.headers['x-api-key']) return json(res, 401, { error: 'forbidden' });
    let update: { subdomain?: unknown; txt?: unknown };
    try {
      update = JSON.parse(body);
    } catch {
      return json(res, 400, { error: 'malformed_json_payload' });
    }
    if (update.subdomain !== account.subdomain) return json(res, 401, { error: 'forbidden' });
    if (typeof update.txt !== 'string' || update.txt.length !== 43) return json(res, 400, { error: 'bad_txt' });
    // acme-dns keeps the two newest values of each subdomain.
    txt.set(account.subdomain, [...(txt.get(account.subdomain) ?? []), update.txt].slice(-2));
    return json(res, 200, { txt: update.txt });
  });
  return {
    ...base,
    url: `http://127.0.0.1:${base.port}`,
    accountFor(domain) {
      let username = byDomain.get(domain);
      if (!username) {
        username = register().username;
        byDomain.set(domain, username);
      }
      return accounts.get(username)!;
    },
    values(domain) {
      const username = byDomain.get(domain);
      return username ? [...(txt.get(accounts.get(username)!.subdomain) ?? [])] : [];
    },
  };
}

// ─── Cloudflare API v4 ─────────────────────────────────────────────────────

export interface CloudflareContract extends ContractServer {
  /** TXT contents at `name` (no trailing dot). */
  txt(name: string): string[];
}

interface CloudflareRecord {
  id: string;
  zone_id: string;
  zone_name: string;
  name: string;
  type: string;
  content: string;
  ttl: number;
  proxied: boolean;
}

export async function startCloudflareContract(token: string, zones: string[]): Promise<CloudflareContract> {
  const zoneIds = new Map(zones.map((z) => [z, randomBytes(16).toString('hex')]));
  const records: CloudflareRecord[] = [];
  const envelope = (result: unknown, extra: object = {}) => ({ success: true, errors: [], messages: [], result, ...extra });
  const failure = (res: http.ServerResponse, status: number, code: number, message: string) => json(res, status, { success: false, errors: [{ code, message }], messages: [], result: null });
  const page = (items: unknown[]) => envelope(items, { result_info: { page: 1, per_page: 100, count: items.length, total_count: items.length, total_pages: 1 } });
  const filter = (q: URLSearchParams, field: string) => q.get(`${field}.exact`) ?? q.get(`${field}[exact]`) ?? q.get(field) ?? undefined;

  const base = await serve((req, body, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname.replace(/^\/client\/v4/, '');
    if (req.headers.authorization !== `Bearer ${token}`) return failure(res, 403, 10000, 'Authentication error');
    if (req.method === 'GET' && path === '/zones') {
      const name = url.searchParams.get('name');
      return json(res, 200, page([...zoneIds].filter(([z]) => name === null || z === name).map(([z, id]) => ({ id, name: z, status: 'active' }))));
    }
    const m = /^\/zones\/([0-9a-f]+)\/dns_records(?:\/([0-9a-f]+))?$/.exec(path);
    const zone = m && [...zoneIds].find(([, id]) => id === m[1]);
    if (!m || !zone) return failure(res, 404, 7003, 'Could not route to the requested path');
    const [zoneName, zoneId] = zone;
    if (req.method === 'GET' && !m[2]) {
      const [type, name, content] = ['type', 'name', 'content'].map((f) => filter(url.searchParams, f));
      return json(res, 200, page(records.filter((r) => r.zone_id === zoneId && (!type || r.type === type) && (!name || r.name === name) && (!content || r.content === content))));
    }
    if (req.method === 'POST' && !m[2]) {
      const input = JSON.parse(body) as Partial<CloudflareRecord>;
      if (input.type !== 'TXT' || typeof input.name !== 'string' || typeof input.content !== 'string') return failure(res, 400, 9005, 'Content for TXT record is invalid.');
      if (input.name !== zoneName && !input.name.endsWith(`.${zoneName}`)) return failure(res, 400, 9007, 'Name is not in the zone.');
      if (records.some((r) => r.zone_id === zoneId && r.type === 'TXT' && r.name === input.name && r.content === input.content)) return failure(res, 400, 81058, 'An identical record already exists.');
      const record: CloudflareRecord = { id: randomBytes(16).toString('hex'), zone_id: zoneId, zone_name: zoneName, name: input.name, type: 'TXT', content: input.content, ttl: input.ttl ?? 1, proxied: false };
      records.push(record);
      return json(res, 200, envelope(record));
    }
    if (req.method === 'DELETE' && m[2]) {
      const at = records.findIndex((r) => r.zone_id === zoneId && r.id === m[2]);
      if (at < 0) return failure(res, 404, 81044, 'Record does not exist.');
      records.splice(at, 1);
      return json(res, 200, envelope({ id: m[2] }));
    }
    return failure(res, 405, 10405, 'Method not allowed');
  });
  return { ...base, url: `http://127.0.0.1:${base.port}/client/v4`, txt: (name) => records.filter((r) => r.type === 'TXT' && r.name === name).map((r) => r.content) };
}

// ─── Route 53 (REST-XML) ───────────────────────────────────────────────────

export interface Route53Contract extends ContractServer {
  /** TXT values at `name` (no trailing dot), unquoted. */
  txt(name: string): string[];
}

interface RecordSet {
  name: string;
  type: string;
  ttl: number;
  values: string[];
}

const NS = 'https://route53.amazonaws.com/doc/2013-04-01/';
const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const dotted = (name: string) => (name.endsWith('.') ? name : `${name}.`);

/** `parseXML`'s element: a single child is an object, several an array. */
const list = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

export async function startRoute53Contract(accessKeyId: string, zones: string[]): Promise<Route53Contract> {
  const zoneIds = new Map(zones.map((z) => [dotted(z), `Z${randomBytes(8).toString('hex').toUpperCase()}`]));
  const sets = new Map<string, RecordSet[]>([...zoneIds.values()].map((id) => [id, []]));
  const changes = new Map<string, number>(); // change id → GetChange polls so far
  const xml = (res: http.ServerResponse, status: number, body: string) => {
    res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': randomUUID() });
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
  };
  const error = (res: http.ServerResponse, status: number, code: string, message: string) =>
    xml(res, status, `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>${code}</Code><Message>${escapeXml(message)}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`);
  const setXml = (s: RecordSet) =>
    `<ResourceRecordSet><Name>${escapeXml(s.name)}</Name><Type>${s.type}</Type><TTL>${s.ttl}</TTL><ResourceRecords>${s.values.map((v) => `<ResourceRecord><Value>${escapeXml(v)}</Value></ResourceRecord>`).join('')}</ResourceRecords></ResourceRecordSet>`;
  const changeInfo = (id: string, status: string) => `<ChangeInfo><Id>/change/${id}</Id><Status>${status}</Status><SubmittedAt>${new Date().toISOString()}</SubmittedAt></ChangeInfo>`;

  const base = await serve((req, body, res) => {
    const auth = String(req.headers.authorization ?? '');
    if (!auth.startsWith('AWS4-HMAC-SHA256 ') || !auth.includes(`Credential=${accessKeyId}/`)) return error(res, 403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname.replace(/\/$/, '');
    if (req.method === 'GET' && path === '/2013-04-01/hostedzonesbyname') {
      // Zones in order from DNSName on, as Route 53 lists them (not only the exact name).
      const from = dotted(url.searchParams.get('dnsname') ?? '');
      const sorted = [...zoneIds].sort(([a], [b]) => a.split('.').reverse().join('.').localeCompare(b.split('.').reverse().join('.')));
      const rest = sorted.filter(([z]) => z.split('.').reverse().join('.') >= from.split('.').reverse().join('.')).slice(0, Number(url.searchParams.get('maxitems') ?? 100));
      const items = rest.map(([z, id]) => `<HostedZone><Id>/hostedzone/${id}</Id><Name>${z}</Name><CallerReference>contract</CallerReference><Config><PrivateZone>false</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone>`);
      return xml(res, 200, `<ListHostedZonesByNameResponse xmlns="${NS}"><HostedZones>${items.join('')}</HostedZones><DNSName>${from}</DNSName><IsTruncated>false</IsTruncated><MaxItems>${items.length}</MaxItems></ListHostedZonesByNameResponse>`);
    }
    const changeMatch = /^\/2013-04-01\/change\/(C[0-9A-F]+)$/.exec(path);
    if (req.method === 'GET' && changeMatch) {
      const polls = changes.get(changeMatch[1]!);
      if (polls === undefined) return error(res, 404, 'NoSuchChange', 'A change with the specified change ID does not exist.');
      changes.set(changeMatch[1]!, polls + 1);
      return xml(res, 200, `<GetChangeResponse xmlns="${NS}">${changeInfo(changeMatch[1]!, polls >= 1 ? 'INSYNC' : 'PENDING')}</GetChangeResponse>`);
    }
    const m = /^\/2013-04-01\/hostedzone\/([A-Z0-9]+)\/rrset$/.exec(path);
    const zoneSets = m ? sets.get(m[1]!) : undefined;
    if (!m || !zoneSets) return error(res, 404, 'NoSuchHostedZone', 'No hosted zone found with the specified ID.');
    if (req.method === 'GET') {
      // From (name, type) on in Route 53's order; the next set when there is no exact one.
      const key = (s: { name: string; type: string }) => `${s.name.split('.').reverse().join('.')} ${s.type}`;
      const start = key({ name: dotted(url.searchParams.get('name') ?? ''), type: url.searchParams.get('type') ?? '' });
      const found = [...zoneSets].sort((a, b) => key(a).localeCompare(key(b))).filter((s) => key(s) >= start).slice(0, Number(url.searchParams.get('maxitems') ?? 100));
      return xml(res, 200, `<ListResourceRecordSetsResponse xmlns="${NS}"><ResourceRecordSets>${found.map(setXml).join('')}</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>${found.length}</MaxItems></ListResourceRecordSetsResponse>`);
    }
    if (req.method !== 'POST') return error(res, 405, 'MethodNotAllowed', 'Method not allowed');
    type XmlSet = { Name: string; Type: string; TTL?: string; ResourceRecords?: { ResourceRecord: { Value: string } | Array<{ Value: string }> } };
    const parsed = parseXML(body) as { ChangeResourceRecordSetsRequest: { ChangeBatch: { Changes: { Change: Array<{ Action: string; ResourceRecordSet: XmlSet }> | { Action: string; ResourceRecordSet: XmlSet } } } } };
    const batch = list(parsed.ChangeResourceRecordSetsRequest.ChangeBatch.Changes.Change).map((c) => ({
      action: c.Action,
      set: { name: dotted(c.ResourceRecordSet.Name), type: c.ResourceRecordSet.Type, ttl: Number(c.ResourceRecordSet.TTL ?? 0), values: list(c.ResourceRecordSet.ResourceRecords?.ResourceRecord).map((r) => r.Value) },
    }));
    // Atomic: every change is checked against the state as it would be, then all apply or none.
    const next = [...zoneSets];
    for (const { action, set } of batch) {
      const at = next.findIndex((s) => s.name === set.name && s.type === set.type);
      const label = `[name='${set.name}', type='${set.type}']`;
      if (action === 'DELETE') {
        const current = next[at];
        if (!current || current.ttl !== set.ttl || [...current.values].sort().join('\n') !== [...set.values].sort().join('\n')) {
          return error(res, 400, 'InvalidChangeBatch', `[Tried to delete resource record set ${label} but the values provided do not match the current values]`);
        }
        next.splice(at, 1);
      } else if (action === 'CREATE') {
        if (at >= 0) return error(res, 400, 'InvalidChangeBatch', `[Tried to create resource record set ${label} but it already exists]`);
        next.push(set);
      } else {
        return error(res, 400, 'InvalidInput', `Invalid action ${action}`);
      }
    }
    zoneSets.splice(0, zoneSets.length, ...next);
    const id = `C${randomBytes(8).toString('hex').toUpperCase()}`;
    changes.set(id, 0);
    return xml(res, 200, `<ChangeResourceRecordSetsResponse xmlns="${NS}">${changeInfo(id, 'PENDING')}</ChangeResourceRecordSetsResponse>`);
  });
  return {
    ...base,
    url: `http://127.0.0.1:${base.port}`,
    txt: (name) => [...sets.values()].flat().filter((s) => s.type === 'TXT' && s.name === dotted(name)).flatMap((s) => s.values.map((v) => v.replace(/^"(.*)"$/, '$1'))),
  };
}

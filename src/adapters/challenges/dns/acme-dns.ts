/**
 * acme-dns (github.com/joohoi/acme-dns): a tiny DNS server made only for
 * DNS-01. Each domain registers an account once and points
 * `_acme-challenge.<domain>` at the account's `fulldomain` with a CNAME;
 * from then on `POST /update` with the account's credentials publishes a
 * value. The API has no delete: the server keeps the two newest values of
 * each account (exactly what an apex + wildcard pair needs) and older ones
 * rotate out. So `remove` only forgets, and `set` does not send a value it
 * already sent (a repeat would push the pair's other value out).
 *
 * Contract-tested against a local server implementing the documented API;
 * not run against a real acme-dns here.
 */
import { ConfigError, DnsProviderError } from '../../../errors.js';
import type { DnsProvider } from '../dns-01.js';
import { defineDnsProvider, type DnsProviderOptions, type TxtRecord } from './provider.js';

/** One acme-dns account, as `POST /register` returns it (and as lego's acme-dns storage file holds it). */
export interface AcmeDnsAccount {
  username: string;
  password: string;
  /** The account's subdomain (a UUID). */
  subdomain: string;
  /** `<subdomain>.<acme-dns zone>`: where `_acme-challenge.<domain>` must point. */
  fulldomain: string;
}

/** Options of `acmeDnsProvider`. */
export interface AcmeDnsProviderOptions extends DnsProviderOptions {
  /** The acme-dns API, e.g. `https://auth.acme-dns.io`. HTTPS, or HTTP to loopback. */
  apiUrl: string;
  /**
   * The account of each domain (`example.com`, also used for `*.example.com`):
   * a map, or a function for many domains (from a database, say).
   */
  accounts: Record<string, AcmeDnsAccount> | ((domain: string) => AcmeDnsAccount | undefined);
}

/** Bytes of an API answer read at most: acme-dns answers a few dozen. */
const MAX_ANSWER_BYTES = 64 * 1024;
/** The server keeps this many values per account. */
const KEPT_VALUES = 2;

async function readBounded(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel();
      break;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A `DnsProvider` for an acme-dns server. Throws `ConfigError` for bad options.
 *
 * @example
 * acmeDnsProvider({ apiUrl: 'https://auth.acme-dns.io', accounts: JSON.parse(readFileSync('acme-dns-accounts.json', 'utf8')) })
 */
export function acmeDnsProvider(options: AcmeDnsProviderOptions): DnsProvider {
  const what = 'acmeDnsProvider';
  let api: URL;
  try {
    api = new URL(options.apiUrl);
  } catch {
    throw new ConfigError(`${what}: apiUrl is not a URL`);
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(api.hostname);
  if (api.protocol !== 'https:' && !(api.protocol === 'http:' && loopback)) throw new ConfigError(`${what}: apiUrl must be https`);
  const updateUrl = new URL('update', api.href.endsWith('/') ? api.href : `${api.href}/`);
  const accounts = options.accounts;
  if (typeof accounts !== 'function' && (typeof accounts !== 'object' || accounts === null)) throw new ConfigError(`${what}: accounts must be a map or a function`);
  const secrets = typeof accounts === 'function' ? [] : Object.values(accounts).map((a) => a.password);
  /** Values sent per subdomain, newest last (at most KEPT_VALUES). */
  const sent = new Map<string, string[]>();

  function accountOf(record: TxtRecord): AcmeDnsAccount {
    const domain = record.challengeName.replace(/^_acme-challenge\./, '');
    const account = typeof accounts === 'function' ? accounts(domain) : accounts[domain];
    if (!account || typeof account.username !== 'string' || typeof account.password !== 'string' || typeof account.subdomain !== 'string') {
      throw new DnsProviderError(`acme-dns: no account for ${domain}`, { code: 'ERR_DNS_NO_ACCOUNT', provider: 'acme-dns' });
    }
    // Accounts from a function are known only now: scrub their passwords too.
    if (!secrets.includes(account.password)) secrets.push(account.password);
    return account;
  }

  async function add(record: TxtRecord, signal: AbortSignal): Promise<void> {
    const account = accountOf(record);
    const recent = sent.get(account.subdomain) ?? [];
    if (recent.includes(record.value)) return;
    const res = await fetch(updateUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-user': account.username, 'x-api-key': account.password },
      body: JSON.stringify({ subdomain: account.subdomain, txt: record.value }),
      signal,
      redirect: 'error',
    });
    const text = await readBounded(res);
    if (res.status !== 200) {
      let reason = '';
      try {
        const body = JSON.parse(text) as { error?: unknown };
        if (typeof body.error === 'string') reason = `: ${body.error.slice(0, 200)}`;
      } catch {
        // not JSON: the status says enough
      }
      throw new DnsProviderError(`acme-dns update for ${record.challengeName} answered HTTP ${res.status}${reason}`, { status: res.status, provider: 'acme-dns', server: api.origin });
    }
    sent.set(account.subdomain, [...recent, record.value].slice(-KEPT_VALUES));
  }

  return defineDnsProvider(
    {
      name: 'acme-dns',
      secrets,
      add,
      // No delete in the API: forget the value so that a later set sends it again.
      delete: async (record) => {
        const account = accountOf(record);
        const recent = sent.get(account.subdomain);
        if (recent) sent.set(account.subdomain, recent.filter((v) => v !== record.value));
      },
    },
    options,
  );
}

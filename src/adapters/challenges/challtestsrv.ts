/**
 * A DNS-01 provider for `pebble-challtestsrv`, the fake DNS server that Pebble
 * resolves through in tests. It is a real provider (HTTP calls to the
 * management API) so that tests exercise the same DnsProvider contract a
 * production provider implements.
 *
 * challtestsrv wants fully-qualified hosts with a trailing dot. `/set-txt`
 * appends a value; `/clear-txt` drops every value of the host, so `remove`
 * withdraws all values of that name (fine for tests: one attempt per name).
 */
import http from 'node:http';
import type { DnsProvider, DnsProviderCallOptions } from './dns-01.js';

function post(managementUrl: string, path: string, body: unknown, options?: DnsProviderCallOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(
      new URL(path, managementUrl),
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }, timeout: 5000, signal: options?.signal },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`challtestsrv ${path} answered HTTP ${res.statusCode}`))));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`challtestsrv ${path} timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

const fqdnWithDot = (fqdn: string) => (fqdn.endsWith('.') ? fqdn : `${fqdn}.`);

/** A `DnsProvider` backed by `pebble-challtestsrv`'s management API at `managementUrl`. */
export function challtestsrvDnsProvider(managementUrl: string): DnsProvider {
  return {
    set: (fqdn, value, options) => post(managementUrl, '/set-txt', { host: fqdnWithDot(fqdn), value }, options),
    // Cleanup runs after the attempt, even an aborted one: no signal here on purpose.
    remove: (fqdn) => post(managementUrl, '/clear-txt', { host: fqdnWithDot(fqdn) }),
  };
}

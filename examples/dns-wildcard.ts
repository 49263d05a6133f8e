import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { acmeIssuer, createCertEngine, fileStorage, LETS_ENCRYPT_STAGING } from 'certstate';
import { rfc2136DnsProvider } from 'certstate/dns';

const env = process.env;
const domain = env.DOMAIN ?? 'example.com';

// DNS-01 through RFC 2136: the zone's primary and a TSIG key allowed to update it.
const dnsProvider = rfc2136DnsProvider({
  server: env.DNS_SERVER ?? '192.0.2.53',
  tsigKey: { name: env.TSIG_KEY_NAME ?? 'certstate-acme', algorithm: 'hmac-sha256', secret: env.TSIG_SECRET ?? '' },
  // Optional: resolvers for CNAME and zone lookups (default: the system's), and
  // the port of the zone's name servers (53; a test set-up serves on another).
  ...(env.DNS_RESOLVERS ? { resolvers: env.DNS_RESOLVERS.split(',') } : {}),
  ...(env.DNS_NAMESERVER_PORT ? { propagation: { nameserverPort: Number(env.DNS_NAMESERVER_PORT), intervalMs: 200 } } : {}),
});

const engine = createCertEngine({
  storage: fileStorage(env.CERTSTATE_DATA ?? './certstate-data'),
  issuers: [
    acmeIssuer({
      directoryUrl: env.ACME_DIRECTORY_URL ?? LETS_ENCRYPT_STAGING,
      email: `ops@${domain}`,
      agreeToTerms: true,
      challenges: ['dns-01'],
      dnsProvider,
      ...(env.ACME_CA_BUNDLE ? { caBundle: readFileSync(env.ACME_CA_BUNDLE, 'utf8') } : {}),
    }),
  ],
  names: [[domain, `*.${domain}`]], // ONE certificate: the apex and every name one label below it
});
engine.on('cert_obtained', (e) => console.log(`obtained ${e.name}`));
await engine.start();

const server = https.createServer({ ...engine.tlsOptions() }, (req, res) => res.end(`hello from ${req.headers.host}\n`));
await new Promise<void>((resolve) => server.listen(Number(env.PORT ?? 8443), resolve));
console.log(`listening on ${(server.address() as AddressInfo).port}`);

process.once('SIGTERM', () => {
  server.close();
  void engine.stop();
});

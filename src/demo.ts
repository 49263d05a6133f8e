/**
 * `npm start`: a demo HTTPS server on 127.0.0.1 that obtains certificates on
 * demand for any `*.localhost` name from a local CA — no internet needed.
 * Every lifecycle transition is logged with pino.
 *
 *   PORT=8443 CERTSTATE_DATA=./certstate-data npm start
 */
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { createCertEngine, fileStorage, localCaCertificate, localCaIssuer } from './index.js';

const port = Number(process.env.PORT ?? 8443);
const dataDir = process.env.CERTSTATE_DATA ?? './certstate-data';
const logger = pino({ level: process.env.LOG_LEVEL ?? 'info' });

const storage = fileStorage(dataDir);
const engine = createCertEngine({
  storage,
  issuers: [localCaIssuer({ leafValidityMs: 24 * 3_600_000 })],
  // Only *.localhost: anyone can send any SNI, and a certificate engine must not issue for whatever it is told.
  onDemand: { decide: (name) => name === 'localhost' || name.endsWith('.localhost') },
  logger,
});
await engine.start();

// Clients trust the local CA through this file (curl --cacert, NODE_EXTRA_CA_CERTS).
const caPath = join(dataDir, 'local-ca.pem');
await writeFile(caPath, await localCaCertificate(storage), { mode: 0o644 });

const server = https.createServer({ ...engine.tlsOptions() }, (req, res) => {
  const name = (req.socket as import('node:tls').TLSSocket).servername || 'unknown';
  const status = engine.status().find((s) => s.name === name);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify({ hello: name, state: status?.state, notAfter: status?.certificate && new Date(status.certificate.notAfter).toISOString(), issuer: status?.certificate?.issuer }, null, 2)}\n`);
});
engine.attachServer(server);
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address() as AddressInfo;
  // A plain line on stdout, for people and for the test that starts this demo.
  process.stdout.write(`certstate demo listening on https://127.0.0.1:${bound}\n`);
  process.stdout.write(`try: curl --cacert ${caPath} --resolve demo.localhost:${bound}:127.0.0.1 https://demo.localhost:${bound}/\n`);
});

const shutdown = () => {
  server.close();
  engine.stop().then(() => process.exit(0));
};
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);

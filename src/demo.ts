/**
 * `npm start`: a demo HTTPS server on 127.0.0.1 that obtains certificates on
 * demand for any `*.localhost` name from a local CA — no internet needed.
 * Every lifecycle transition is logged with pino.
 *
 *   PORT=8443 CERTSTATE_DATA=./certstate-data npm start
 *
 * Only names under .localhost are issued: any other SNI is refused with a TLS
 * alert (try `openssl s_client -connect 127.0.0.1:8443 -servername refused.example`).
 */
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
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
// Absolute, so that the printed curl line works from any directory.
const caPath = resolve(dataDir, 'local-ca.pem');
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

// SIGINT, SIGTERM and a closed terminal (SIGHUP) stop the demo; it leaves within 5 s whatever hangs.
// (`npm start` runs node itself: tsx's CLI would add a process of its own between npm and us.)
let stopping = false;
const shutdown = () => {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(1), 5_000).unref();
  server.close();
  server.closeAllConnections();
  engine.stop().then(() => process.exit(0));
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, shutdown);
// npm runs us under `sh -c`, which dies of the SIGTERM npm forwards to it without passing it on:
// when our parent goes, go too (a demo must not outlive the command that started it).
const parent = process.ppid;
setInterval(() => process.ppid !== parent && shutdown(), 500).unref();

import https from 'node:https';
import { createCertEngine, localCaIssuer, memoryStorage } from 'certstate';

const engine = createCertEngine({
  storage: memoryStorage(), // production: fileStorage('./certstate-data') (the default), redisStorage, postgresStorage
  issuers: [localCaIssuer()], // production: acmeIssuer({ directoryUrl, email, agreeToTerms: true })
  names: ['app.localhost'], // managed: obtained at start, renewed on time
  handshakeTimeout: 30_000,
});
engine.on('cert_obtained', (e) => console.log(`obtained ${e.name}, valid until ${new Date(e.certificate.notAfter).toISOString()}`));
await engine.start();

const server = https.createServer({ ...engine.tlsOptions() }, (req, res) => res.end('hello over TLS\n'));
engine.attachServer(server); // session tickets under the cluster's keys: sessions resume on every process
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

const cert = await engine.getCertificate('app.localhost'); // what a handshake for app.localhost gets
console.log(engine.status().map((s) => `${s.name}: ${s.state}`).join('\n'), cert.meta.issuer);

server.close();
await engine.stop();

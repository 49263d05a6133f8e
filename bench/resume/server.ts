/**
 * Child process: one TLS server for bench:resume, measuring its own CPU.
 *
 *   certstate  `engine.tlsOptions()` + `engine.attachServer()` of an engine on
 *              file storage shared with the other certstate process: session
 *              tickets under the cluster's keys (Node's ticket-key callback)
 *   node       plain `tls.createServer` with one certificate and Node's own
 *              `ticketKeys`: what resumption costs Node itself
 *
 * Every connection gets a two-byte answer and is ended (not destroyed), so a
 * full TLS 1.3 handshake pays for the tickets it issues, as a real server does.
 */
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { fileStorage } from '../../src/adapters/storage/file.js';
import type { CertEngine } from '../../src/engine/engine.js';
import { serveRpc } from '../lib/children.js';
import { ensureDataset } from '../lib/dataset.js';
import { engineModule, refusingIssuer } from '../lib/engine-module.js';

export type ResumeServerMode = 'certstate' | 'node';

export interface ResumeEnd {
  cpuUs: number;
  handshakes: number;
  /** Of which resumed (the server's own view: `isSessionReused()`). */
  resumed: number;
  clientErrors: number;
}


let server: tls.Server | undefined;
let engine: CertEngine | undefined;
let handshakes = 0;
let resumed = 0;
let clientErrors = 0;
let cpuStart = process.cpuUsage();

async function serverOptions(mode: ResumeServerMode, names: number, storageDir: string): Promise<{ options: tls.TlsOptions; engine?: CertEngine }> {
  const dataset = await ensureDataset(names);
  if (mode === 'node') {
    const unit = JSON.parse(await readFile(dataset.unitPath(dataset.names[0]!), 'utf8')) as { certificatePem: string; privateKeyPem: string };
    return { options: { cert: unit.certificatePem, key: unit.privateKeyPem, ticketKeys: randomBytes(48), sessionIdContext: 'bench', ALPNProtocols: ['http/1.1'] } };
  }
  const { createCertEngine } = await engineModule();
  const e = createCertEngine({ storage: fileStorage(storageDir), issuers: [refusingIssuer('resume')], names: dataset.names });
  await e.start();
  for (const name of dataset.names) await e.getCertificate(name); // every SecureContext built: steady state
  return { options: e.tlsOptions() as tls.TlsOptions, engine: e };
}

serveRpc({
  async setup({ mode, names, storageDir }: { mode: ResumeServerMode; names: number; storageDir: string }): Promise<{ port: number }> {
    const built = await serverOptions(mode, names, storageDir);
    engine = built.engine;
    server = tls.createServer(built.options);
    engine?.attachServer(server);
    server.on('secureConnection', (socket) => {
      handshakes++;
      if (socket.isSessionReused()) resumed++;
      socket.on('error', () => {}); // clients hang up right after the handshake
      socket.end('ok');
    });
    server.on('tlsClientError', () => clientErrors++);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', 1024, resolve));
    return { port: (server.address() as AddressInfo).port };
  },
  begin(): void {
    handshakes = 0;
    resumed = 0;
    clientErrors = 0;
    cpuStart = process.cpuUsage();
  },
  end(): ResumeEnd {
    const cpu = process.cpuUsage(cpuStart);
    return { cpuUs: cpu.user + cpu.system, handshakes, resumed, clientErrors };
  },
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await engine?.stop();
  },
});

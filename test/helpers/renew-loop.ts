/**
 * Child process for the crash test: renews one name over and over on file
 * storage, printing "stored" after each renewal, until it is killed.
 */
import { fileStorage } from '../../src/adapters/storage/file.js';
import { createCertEngine } from '../../src/engine/engine.js';
import { scriptedIssuer } from './scripted-issuer.js';

const [dir, name] = process.argv.slice(2) as [string, string];
// A short lease: the next round's process takes over the lock of the one that was killed within seconds.
const engine = createCertEngine({ storage: fileStorage(dir), issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names: [name], lockTtlMs: 1500 });
await engine.start();
await engine.getCertificate(name);
for (let i = 0; i < 10_000; i++) {
  await engine.forceRenew(name);
  process.stdout.write('stored\n');
}
await engine.stop();

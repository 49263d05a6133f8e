/**
 * The engine's own cost per handshake, without TLS: µs per `SNICallback`
 * call for names with valid certificates (every SecureContext built
 * beforehand), against a bare `Map` lookup answered the same way. The TLS
 * handshake itself costs ~500 µs of server CPU here, so this says how much
 * of the 1.15 budget the engine spends. Use CERTSTATE_BENCH_ENGINE to
 * compare a private engine copy. The SNI callback is called as Node calls
 * it, as a method of a socket whose server is attached for session tickets.
 *
 *   node --import tsx bench/tools/hot-path.ts [--names 1000] [--calls 100000] [--rounds 7]
 */
import tls, { type SecureContext } from 'node:tls';
import { memoryStorage } from '../../src/adapters/storage/memory.js';
import { parseFlags } from '../lib/args.js';
import { ensureDataset, seedStorage } from '../lib/dataset.js';
import { engineModule, engineModulePath } from '../lib/engine-module.js';
import { summarize } from '../lib/stats.js';

const flags = parseFlags('bench/tools/hot-path.ts', {
  names: { default: 1000, help: 'names with valid certificates' },
  calls: { default: 100_000, help: 'SNICallback calls per round' },
  rounds: { default: 7, help: 'rounds (median reported)' },
});

type Sni = (this: unknown, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;

/**
 * What Node passes as `this`: the server-side socket, whose `server` the
 * session-ticket wrapper checks is attached (a real `tls.Server`, never listening).
 */
const server = tls.createServer({});
const socket = { server, remoteAddress: '127.0.0.1' };

/** µs per call of `sni` over `calls` calls cycling through `names`, all in flight at once. */
async function round(sni: Sni, names: string[]): Promise<number> {
  const t0 = performance.now();
  let left = flags.calls;
  let failed: Error | null = null;
  await new Promise<void>((resolve) => {
    for (let i = 0; i < flags.calls; i++) {
      sni.call(socket, names[i % names.length]!, (err) => {
        failed ??= err;
        if (--left === 0) resolve();
      });
    }
  });
  if (failed) throw failed;
  return ((performance.now() - t0) * 1000) / flags.calls;
}

const dataset = await ensureDataset(flags.names);
const storage = memoryStorage();
await seedStorage(dataset, storage);
const { createCertEngine } = await engineModule();
const engine = createCertEngine({
  storage,
  // Answers no challenge on the server: tlsOptions() without the TLS-ALPN-01 wrapper, as bench:handshake's certstate.
  issuers: [{ id: 'bench:none', issue: async () => Promise.reject(new Error('no issuance expected')), challenges: [] }],
  names: dataset.names,
});
await engine.start();
const contexts = new Map<string, SecureContext>();
for (const name of dataset.names) contexts.set(name, (await engine.getCertificate(name)).secureContext);

const engineSni = (engine.tlsOptions() as { SNICallback: Sni }).SNICallback;
const mapSni: Sni = (name, cb) => cb(null, contexts.get(name));
const engineUs: number[] = [];
const mapUs: number[] = [];
for (let r = 0; r < flags.rounds; r++) {
  engineUs.push(await round(engineSni, dataset.names));
  mapUs.push(await round(mapSni, dataset.names));
}
await engine.stop();
const e = summarize(engineUs);
const m = summarize(mapUs);
console.log(`engine ${engineModulePath()}`);
console.log(`SNICallback, valid certificate, ${flags.names} names: engine ${e.median.toFixed(2)} µs (${e.min.toFixed(2)}–${e.max.toFixed(2)}), bare Map ${m.median.toFixed(2)} µs; engine − Map = ${(e.median - m.median).toFixed(2)} µs per handshake`);

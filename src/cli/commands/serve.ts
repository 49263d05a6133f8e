/**
 * `certstate serve`: run an engine with the admin page (and optionally an
 * HTTPS server answering with its certificates) until SIGINT/SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { assertValidToken } from '../../admin/access.js';
import { serveAdmin } from '../../admin/serve.js';
import { createCertEngine } from '../../engine/engine.js';
import { managedCertificates, type ManagedEntry } from '../../engine/managed-names.js';
import { ConfigError } from '../../errors.js';
import { keys } from '../../storage-keys.js';
import type { Storage } from '../../types.js';
import { parse, parseHostPort } from '../args.js';
import { DEMO_NAMES, demoIssuer } from '../demo.js';
import { CliError, errorText, ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { ISSUER_OPTIONS, ISSUER_USAGE, issuerFromFlags, startChallengeServer, type IssuerFlags } from '../issuer-flags.js';
import { certificateArgs } from '../names-arg.js';
import { progressLogger, progressPrinter } from '../progress.js';
import { loadStoredCertificate, storedNames } from '../stored-status.js';
import { STORAGE_OPTION, STORAGE_USAGE, withStorage } from './shared.js';

export const USAGE = `Usage: certstate serve [--admin HOST:PORT] [--name CERT]... [--https HOST:PORT] [--demo] [issuer options] [--storage SPEC]

Runs an engine and its admin status page until interrupted (SIGINT/SIGTERM).

  --admin HOST:PORT       admin page address (default 127.0.0.1:9090; port 0 picks a free one).
                          Beyond loopback it needs a token.
  --token-env VAR         read the admin token from environment variable VAR
                          (default CERTSTATE_ADMIN_TOKEN; at least 16 printable characters,
                          set but empty is an error); "--token-env -" generates one
  --name CERT             a certificate to manage: a NAME, or NAME,NAME,... for ONE certificate
                          with all those names (repeatable; default: every certificate in the
                          storage, with the names it was stored with)
  --https HOST:PORT       also serve HTTPS there with the engine's certificates
  --demo                  demo names and a local CA issuing 3-minute certificates, one name
                          failing on purpose; in-memory storage unless --storage is given
${STORAGE_USAGE}

${ISSUER_USAGE}`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { ...STORAGE_OPTION, ...ISSUER_OPTIONS, admin: { type: 'string' }, 'token-env': { type: 'string' }, name: { type: 'string', multiple: true }, https: { type: 'string' }, demo: { type: 'boolean' } },
    USAGE,
  );
  if (positionals.length) throw usageError(`serve takes no arguments (use --name)\n${USAGE}`);
  const admin = parseHostPort(values.admin ?? '127.0.0.1:9090', '--admin');
  const tlsAt = values.https ? parseHostPort(values.https, '--https') : undefined;
  const tokenVar = values['token-env'] ?? 'CERTSTATE_ADMIN_TOKEN';
  const token = adminToken(tokenVar, io.env);
  const spec = values.storage ?? (values.demo ? 'memory:' : undefined);

  return withStorage(io, spec, async (storage) => {
    const names = values.demo ? [...DEMO_NAMES, ...certificateArgs(values.name ?? [])] : await managedNames(values.name, storage);
    const issuer = values.demo ? demoIssuer() : await issuerFromFlags(values as IssuerFlags, io.cwd);
    const report = progressPrinter(io.stderr);
    // The demo's 3-minute certificates renew every ~90 s: far below the issuance floor a real CA gets.
    const timing = values.demo ? { minRenewalIntervalMs: 0, maxOrdersPerWindow: 10_000 } : undefined;
    const engine = createCertEngine({ storage, issuers: [issuer], names, logger: progressLogger(report, 'engine'), ...(timing ? { timing } : {}) });
    const challenges = await startChallengeServer(values as IssuerFlags, storage);
    let adminServer: Awaited<ReturnType<typeof serveAdmin>> | undefined;
    let tlsServer: https.Server | undefined;
    try {
      try {
        // Before start(): the page's history then shows the start-up transitions.
        adminServer = await serveAdmin(engine, { host: admin.host, port: admin.port, ...(token ? { token } : {}), issuerIds: [issuer.id], title: values.demo ? 'certstate demo' : 'certstate' });
      } catch (error) {
        if (error instanceof ConfigError) throw usageError(`${error.message} (set $${tokenVar})`);
        throw new CliError(ExitCode.FAILURE, `cannot serve the admin page on ${values.admin ?? '127.0.0.1:9090'}: ${errorText(error)}`);
      }
      const off = engine.on('state_changed', (e) => report(e.name, `${e.from ?? 'start'} → ${e.to}`));
      await engine.start();
      io.stdout.write(`admin: ${adminServer.url}${token ? `?token=${tokenVar === '-' ? encodeURIComponent(token) : `<$${tokenVar}>`}` : ''}\n`);
      if (tlsAt) {
        tlsServer = https.createServer({ ...engine.tlsOptions() }, (_req, res) => res.end('hello from certstate\n'));
        tlsServer.on('tlsClientError', () => {}); // refused handshakes are logged by the engine
        engine.attachServer(tlsServer);
        await new Promise<void>((resolve, reject) => tlsServer!.once('error', reject).listen(tlsAt.port, tlsAt.host, () => resolve()));
        io.stdout.write(`https: https://${tlsAt.host}:${(tlsServer.address() as AddressInfo).port}/\n`);
      }
      const signal = await io.stopRequested();
      io.stderr.write(`${signal}: stopping\n`);
      off();
      return ExitCode.OK;
    } finally {
      await adminServer?.close();
      if (tlsServer) await new Promise<void>((resolve) => (tlsServer!.close(() => resolve()), tlsServer!.closeAllConnections()));
      await engine.stop();
      await challenges.close();
    }
  });
}

/**
 * The admin token: generated for `-`, else the variable's value. A variable
 * that is set but empty or short is an error, not "no token": on loopback
 * that would quietly serve without one.
 */
function adminToken(variable: string, env: CliIo['env']): string | undefined {
  if (variable === '-') return randomBytes(24).toString('base64url');
  const value = env[variable];
  if (value === undefined) return undefined;
  try {
    assertValidToken(value, `$${variable}`);
  } catch (error) {
    if (error instanceof ConfigError) throw usageError(error.message);
    throw error;
  }
  return value;
}

/** `--name` flags, else every certificate in the storage (with its names). */
async function managedNames(flags: string[] | undefined, storage: Storage): Promise<ManagedEntry[]> {
  if (flags?.length) return certificateArgs(flags);
  const stored = await storedNames(storage, keys.certificatesPrefix);
  if (stored.length === 0) throw usageError(`no names to serve: ${storage.description} holds no certificates; pass --name NAME (or --demo)`);
  const entries: ManagedEntry[] = await Promise.all(stored.map((name) => withStoredNames(storage, name, new Set(stored))));
  try {
    managedCertificates(entries);
    return entries;
  } catch {
    return stored; // names stored with overlapping certificates: each served under its own key, as before
  }
}

/**
 * A certificate stored under `name` that also covers other names (obtained
 * with `NAME,NAME,...` or an engine's `names: [[...]]`) is served for all of
 * them again, unless one of them has a certificate of its own.
 */
async function withStoredNames(storage: Storage, name: string, stored: ReadonlySet<string>): Promise<ManagedEntry> {
  const meta = await loadStoredCertificate(storage, name).then((unit) => unit?.meta, () => undefined);
  const names = meta?.names.map((n) => n.toLowerCase()) ?? [];
  const others = names.filter((n) => n !== name);
  if (!names.includes(name) || others.length === 0 || others.some((n) => stored.has(n))) return name;
  try {
    return managedCertificates([[name, ...others]])[0]!;
  } catch {
    return name; // a name the engine would not manage (say, a SAN that is not a DNS name): the key alone
  }
}

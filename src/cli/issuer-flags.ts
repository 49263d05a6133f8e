/**
 * The issuer flags shared by `obtain`, `renew` and `serve`, and the HTTP-01
 * responder an ACME issuer needs while they run.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { acmeIssuer, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING } from '../adapters/issuers/acme.js';
import { localCaIssuer } from '../adapters/issuers/local-ca.js';
import { createHttpChallengeHandler } from '../adapters/challenges/http-01.js';
import { ConfigError } from '../errors.js';
import type { Issuer, Storage } from '../types.js';
import { parseHostPort } from './args.js';
import { CliError, errorText, ExitCode, usageError } from './exit-codes.js';

/** `parseArgs` option declarations of the issuer flags. */
export const ISSUER_OPTIONS = {
  issuer: { type: 'string' },
  directory: { type: 'string' },
  email: { type: 'string' },
  'agree-tos': { type: 'boolean' },
  'ca-bundle': { type: 'string' },
  'http-listen': { type: 'string' },
  'no-http': { type: 'boolean' },
} as const;

/** Usage text of the issuer flags. */
export const ISSUER_USAGE = `Issuer options:
  --issuer local|acme     local: a development CA kept in the storage (default); acme: an ACME CA
  --directory URL         ACME directory URL, or "letsencrypt" / "letsencrypt-staging"
  --email ADDRESS         ACME account contact
  --agree-tos             accept the ACME CA's terms of service (required with --issuer acme)
  --ca-bundle FILE        PEM roots to trust for the ACME server's HTTPS (a private CA, Pebble)
  --http-listen HOST:PORT where to answer HTTP-01 challenges (default 0.0.0.0:80)
  --no-http               do not answer HTTP-01 here (another process sharing the storage does)`;

/** Parsed issuer flags. */
export interface IssuerFlags {
  issuer?: string;
  directory?: string;
  email?: string;
  'agree-tos'?: boolean;
  'ca-bundle'?: string;
  'http-listen'?: string;
  'no-http'?: boolean;
}

/** The issuer the flags describe. */
export async function issuerFromFlags(flags: IssuerFlags, cwd: string): Promise<Issuer> {
  const kind = flags.issuer ?? 'local';
  if (kind === 'local') {
    for (const flag of ['directory', 'email', 'ca-bundle'] as const) if (flags[flag] !== undefined) throw usageError(`--${flag} only applies to --issuer acme`);
    return localCaIssuer();
  }
  if (kind !== 'acme') throw usageError('--issuer must be local or acme');
  if (!flags.directory) throw usageError('--issuer acme needs --directory URL (or letsencrypt / letsencrypt-staging)');
  if (!flags['agree-tos']) throw usageError("--issuer acme needs --agree-tos: you must accept the CA's terms of service");
  const directoryUrl = flags.directory === 'letsencrypt' ? LETS_ENCRYPT_PRODUCTION : flags.directory === 'letsencrypt-staging' ? LETS_ENCRYPT_STAGING : flags.directory;
  let caBundle: string | undefined;
  if (flags['ca-bundle']) {
    try {
      caBundle = await readFile(path.resolve(cwd, flags['ca-bundle']), 'utf8');
    } catch (error) {
      throw usageError(`cannot read --ca-bundle: ${errorText(error)}`);
    }
  }
  try {
    return acmeIssuer({ directoryUrl, agreeToTerms: true, challenges: ['http-01'], ...(flags.email ? { email: flags.email } : {}), ...(caBundle ? { caBundle } : {}) });
  } catch (error) {
    if (error instanceof ConfigError) throw usageError(error.message);
    throw error;
  }
}

/** A running HTTP-01 responder (or nothing). */
export interface ChallengeServer {
  close(): Promise<void>;
}

/** Answer HTTP-01 challenges from storage while an ACME issuer runs; nothing for the local CA or with `--no-http`. */
export async function startChallengeServer(flags: IssuerFlags, storage: Storage): Promise<ChallengeServer> {
  if ((flags.issuer ?? 'local') !== 'acme' || flags['no-http']) return { close: async () => {} };
  const { host, port } = parseHostPort(flags['http-listen'] ?? '0.0.0.0:80', '--http-listen');
  const server = http.createServer(createHttpChallengeHandler(storage));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (error) {
    const code = (error as { code?: string }).code;
    const hint = code === 'EACCES' ? ' (ports below 1024 need privileges)' : code === 'EADDRINUSE' ? ' (in use: is a server already answering? then use --no-http)' : '';
    throw new CliError(ExitCode.FAILURE, `cannot listen on ${host}:${port} for HTTP-01${hint}: ${errorText(error)}`);
  }
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `certstate obtain CERT...`: get each certificate (a name, or `a,b` for one certificate with both), or confirm it is still valid, showing each step. */
import type { CertEngine } from '../../engine/engine.js';
import { safeError } from '../../safe-error.js';
import type { NameStatus } from '../../types.js';
import { parse, parseSeconds } from '../args.js';
import { isoSeconds, settled, withEngine } from '../engine-run.js';
import { errorInfoText, ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { ISSUER_OPTIONS, ISSUER_USAGE } from '../issuer-flags.js';
import { certificateArgs, certificateKey, certificateLabel } from '../names-arg.js';
import { STORAGE_OPTION, STORAGE_USAGE, withStorage } from './shared.js';

export const USAGE = `Usage: certstate obtain CERT... [--force] [--timeout SECONDS] [issuer options] [--storage SPEC]

Obtains a certificate for each CERT and stores it. CERT is a NAME, or
NAME,NAME,... for ONE certificate with all those names (e.g.
'example.com,*.example.com'), stored under its first. A certificate still
valid in storage is left alone (use renew to replace it). Progress goes to
stderr; one result line per certificate to stdout.

  --force                 retry now even if a previous failure's backoff has not elapsed
  --timeout SECONDS       give up after this long (default 300)
${STORAGE_USAGE}

${ISSUER_USAGE}`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...STORAGE_OPTION, ...ISSUER_OPTIONS, force: { type: 'boolean' }, timeout: { type: 'string' } }, USAGE);
  if (positionals.length === 0) throw usageError(`obtain needs at least one NAME\n${USAGE}`);
  // One entry per certificate (a plain name repeated counts once).
  const names = [...new Map(certificateArgs(positionals).map((entry) => [certificateKey(entry), entry])).values()];
  const timeoutMs = parseSeconds(values.timeout, '--timeout', 300) * 1000;

  return withStorage(io, values.storage, (storage) =>
    withEngine(io, storage, names, values, async (engine) => {
      const results = await Promise.all(names.map((entry) => obtainOne(engine, certificateKey(entry), certificateLabel(entry), values.force === true, timeoutMs, io)));
      return results.every(Boolean) ? ExitCode.OK : ExitCode.FAILURE;
    }),
  );
}

/** One certificate (`name`: its key; `label`: it as shown): true when it ends valid. */
async function obtainOne(engine: CertEngine, name: string, label: string, force: boolean, timeoutMs: number, io: CliIo): Promise<boolean> {
  const initial = engine.status().find((s) => s.name === name)!;
  if (initial.state === 'valid') {
    io.stdout.write(`${label}: already valid until ${isoSeconds(initial.certificate!.notAfter)} (serial ${initial.certificate!.serial}); use renew to replace it\n`);
    return true;
  }
  if (initial.state === 'failed-backoff') {
    if (!force) {
      io.stderr.write(`${label}: in backoff after ${initial.attempts} failed attempt(s) until ${isoSeconds(initial.nextAttemptAt)}; last error ${describe(initial)}. Use --force to retry now.\n`);
      return false;
    }
    // FORCE_RENEW is sent synchronously: the name is attempting when `settled` looks.
    engine.forceRenew(name).catch(() => undefined);
  }
  let outcome: NameStatus;
  try {
    outcome = await settled(engine, name, timeoutMs);
  } catch (error) {
    io.stderr.write(`${label}: ${safeError(error).message}\n`);
    return false;
  }
  if (outcome.state === 'valid') {
    const cert = outcome.certificate!;
    io.stdout.write(`${label}: valid until ${isoSeconds(cert.notAfter)} (serial ${cert.serial}, issuer ${cert.issuerId})\n`);
    return true;
  }
  io.stderr.write(`${label}: failed: ${describe(outcome)}; next attempt not before ${isoSeconds(outcome.nextAttemptAt)}\n`);
  return false;
}

function describe(s: NameStatus): string {
  return s.lastError ? errorInfoText(s.lastError) : 'unknown';
}

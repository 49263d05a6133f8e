/** `certstate renew NAME`: one renewal attempt now, backoff or not. */
import { CertificateUnavailableError, CorruptStorageError } from '../../errors.js';
import { parse } from '../args.js';
import { isoSeconds, withEngine } from '../engine-run.js';
import { safeError } from '../../safe-error.js';
import { CliError, errorText, ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { ISSUER_OPTIONS, ISSUER_USAGE } from '../issuer-flags.js';
import { certificateArgs, certificateKey, certificateLabel } from '../names-arg.js';
import { loadStoredCertificate } from '../stored-status.js';
import { STORAGE_OPTION, STORAGE_USAGE, withStorage } from './shared.js';

export const USAGE = `Usage: certstate renew CERT [issuer options] [--storage SPEC]

Renews CERT's stored certificate now, whatever its renewal time or backoff.
CERT is a NAME, or NAME,NAME,... for a certificate with several names (as
given to obtain: stored under its first; the renewal orders every name).
Exit 3 if CERT has no certificate in the storage (use obtain).
${STORAGE_USAGE}

${ISSUER_USAGE}`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...STORAGE_OPTION, ...ISSUER_OPTIONS }, USAGE);
  if (positionals.length !== 1) throw usageError(`renew needs exactly one CERT\n${USAGE}`);
  const [entry] = certificateArgs(positionals);
  const name = certificateKey(entry!);
  const label = certificateLabel(entry!);
  return withStorage(io, values.storage, async (storage) => {
    try {
      if (!(await loadStoredCertificate(storage, name))) throw new CliError(ExitCode.NOT_FOUND, `${name}: no certificate in ${storage.description} (use obtain)`);
    } catch (error) {
      // A corrupt unit is exactly what a renewal repairs.
      if (!(error instanceof CorruptStorageError)) throw error;
      io.stderr.write(`${label}: stored certificate unreadable (${errorText(error)}); obtaining a new one\n`);
    }
    return withEngine(io, storage, [entry!], values, async (engine) => {
      try {
        const cert = await engine.forceRenew(name);
        io.stdout.write(`${label}: renewed, valid until ${isoSeconds(cert.notAfter)} (serial ${cert.serial}, issuer ${cert.issuerId})\n`);
        return ExitCode.OK;
      } catch (error) {
        if (!(error instanceof CertificateUnavailableError)) throw error;
        io.stderr.write(`${label}: renewal failed: ${safeError(error).message}${error.detail ? ` (CA: ${error.detail})` : ''}\n`);
        return ExitCode.FAILURE;
      }
    });
  });
}

/** `certstate export NAME`: the stored certificate chain and key, as PEM or PKCS#12. */
import path from 'node:path';
import { oneOf, parse } from '../args.js';
import { CliError, errorText, ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { nameArg } from '../names-arg.js';
import { toPkcs12 } from '../pkcs12.js';
import { writePrivateFile } from '../private-file.js';
import { loadStoredCertificate } from '../stored-status.js';
import { STORAGE_OPTION, STORAGE_USAGE, withReadOnlyStorage } from './shared.js';

export const USAGE = `Usage: certstate export NAME [--format pem|p12] [--out FILE] [--password-env VAR] [--storage SPEC]

Writes NAME's certificate chain and private key. --out files always end 0600
(written to a new file and renamed over FILE; a symbolic link at FILE is replaced,
not followed). Read-only on the storage.

  --format pem|p12        pem: chain then key (default); p12: PKCS#12 (RSA and ECDSA keys)
  --out FILE              write here instead of stdout (required for p12 on a terminal)
  --password-env VAR      p12: read the password from environment variable VAR
                          (default CERTSTATE_EXPORT_PASSWORD); required for p12
  --friendly-name TEXT    p12: the label key stores show (default NAME)
${STORAGE_USAGE}`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...STORAGE_OPTION, format: { type: 'string' }, out: { type: 'string' }, 'password-env': { type: 'string' }, 'friendly-name': { type: 'string' } }, USAGE);
  if (positionals.length !== 1) throw usageError(`export needs exactly one NAME\n${USAGE}`);
  const name = nameArg(positionals[0]!);
  const format = oneOf(values.format, ['pem', 'p12'] as const, '--format', 'pem');
  // Passwords never on the command line: it is visible to every user in the process list.
  const passwordVar = values['password-env'] ?? 'CERTSTATE_EXPORT_PASSWORD';
  const password = io.env[passwordVar];
  if (format === 'p12' && !password) throw usageError(`--format p12 needs a password in $${passwordVar}`);
  if (format === 'p12' && !values.out && io.stdout.isTTY) throw usageError('--format p12 is binary: use --out FILE');

  return withReadOnlyStorage(io, values.storage, async (storage) => {
    const unit = await loadStoredCertificate(storage, name);
    if (!unit) throw new CliError(ExitCode.NOT_FOUND, `${name}: no certificate in ${storage.description}`);
    const data: string | Buffer =
      format === 'pem'
        ? `${unit.bundle.certificatePem.trim()}\n${unit.bundle.privateKeyPem.trim()}\n`
        : toPkcs12(unit.bundle, { password: password!, friendlyName: values['friendly-name'] ?? name });
    if (values.out) {
      const file = path.resolve(io.cwd, values.out);
      try {
        await writePrivateFile(file, data);
      } catch (error) {
        throw new CliError(ExitCode.FAILURE, `cannot write ${file}: ${errorText(error)}`);
      }
      io.stderr.write(`${name}: wrote ${format === 'pem' ? 'PEM chain and key' : 'PKCS#12'} to ${file}\n`);
    } else {
      io.stdout.write(data);
    }
    return ExitCode.OK;
  });
}

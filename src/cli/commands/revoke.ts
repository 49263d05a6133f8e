/** `certstate revoke NAME`: revoke NAME's stored certificate at its ACME CA. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { AcmeError } from '../../errors.js';
import { revokeAcmeCertificate } from '../acme-revoke.js';
import { parse } from '../args.js';
import { CliError, errorText, ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { nameArg } from '../names-arg.js';
import { loadStoredCertificate } from '../stored-status.js';
import { STORAGE_OPTION, STORAGE_USAGE, withReadOnlyStorage } from './shared.js';

export const USAGE = `Usage: certstate revoke NAME [--reason CODE] [--ca-bundle FILE] [--storage SPEC]

Revokes NAME's stored certificate at the ACME CA that issued it (signed with
the stored ACME account, or else with the certificate's own key). The stored
certificate is kept: run renew to replace it. Certificates from the local CA
cannot be revoked (exit 4).

  --reason CODE           RFC 5280 reason: 0 unspecified (default), 1 keyCompromise,
                          4 superseded, 5 cessationOfOperation
  --ca-bundle FILE        PEM roots to trust for the ACME server's HTTPS
${STORAGE_USAGE}`;

const REASONS = new Set([0, 1, 3, 4, 5]);

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...STORAGE_OPTION, reason: { type: 'string' }, 'ca-bundle': { type: 'string' } }, USAGE);
  if (positionals.length !== 1) throw usageError(`revoke needs exactly one NAME\n${USAGE}`);
  const name = nameArg(positionals[0]!);
  const reason = values.reason === undefined ? undefined : Number(values.reason);
  if (reason !== undefined && !REASONS.has(reason)) throw usageError('--reason must be 0, 1, 3, 4 or 5');
  const caBundle = values['ca-bundle'] ? await readFile(path.resolve(io.cwd, values['ca-bundle']), 'utf8').catch((e: Error) => {
    throw usageError(`cannot read --ca-bundle: ${errorText(e)}`);
  }) : undefined;

  return withReadOnlyStorage(io, values.storage, async (storage) => {
    const unit = await loadStoredCertificate(storage, name);
    if (!unit) throw new CliError(ExitCode.NOT_FOUND, `${name}: no certificate in ${storage.description}`);
    const { issuerId, serial } = unit.meta;
    if (!issuerId.startsWith('acme:')) {
      const why = issuerId.startsWith('local-ca') ? 'the local development CA has no revocation (remove its root from the trust stores that hold it instead)' : `issuer ${issuerId} offers no revocation through certstate`;
      throw new CliError(ExitCode.NOT_SUPPORTED, `${name}: revoke is not supported: ${why}`);
    }
    const directoryUrl = issuerId.slice('acme:'.length);
    try {
      const by = await revokeAcmeCertificate({ directoryUrl, bundle: unit.bundle, storage, ...(reason !== undefined ? { reason } : {}), ...(caBundle ? { caBundle } : {}) });
      io.stdout.write(`${name}: revoked certificate ${serial} at ${directoryUrl} (signed with the ${by === 'account' ? 'ACME account' : 'certificate key'}); run renew to replace it\n`);
      return ExitCode.OK;
    } catch (error) {
      if (!(error instanceof AcmeError)) throw error;
      io.stderr.write(`${name}: revocation failed: ${errorText(error)}${error.detail ? ` (CA: ${error.detail})` : ''}\n`);
      return ExitCode.FAILURE;
    }
  });
}

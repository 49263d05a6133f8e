/**
 * Exit codes of the `certstate` CLI: a contract with shell scripts, so they
 * never change meaning. Messages go to stderr; data (tables, JSON, PEM) to stdout.
 */
import { maskCredentials, safeError } from '../safe-error.js';
import type { ErrorInfo } from '../types.js';

export const ExitCode = {
  /** Success. */
  OK: 0,
  /** The operation failed: issuance refused or failed, CA or storage error, timeout. */
  FAILURE: 1,
  /** Usage error: unknown command or flag, missing argument, invalid value or configuration. */
  USAGE: 2,
  /** Not found: the name has no certificate in the storage. */
  NOT_FOUND: 3,
  /** Not supported: e.g. `revoke` of a certificate from the local CA, an export format the key cannot take. */
  NOT_SUPPORTED: 4,
} as const;

/** One of {@link ExitCode}'s values. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * An error as the CLI prints it: `Type: message`, through the one safe
 * serializer (credentials in URLs masked, length bounded), never a stack or
 * the other fields an error object may carry.
 */
export function errorText(error: unknown): string {
  const { type, message } = safeError(error);
  return `${type}: ${message}`;
}

/** A recorded error (`ErrorInfo`) as the CLI prints it: type, message (credentials masked) and the CA's detail. */
export function errorInfoText(info: Pick<ErrorInfo, 'type' | 'message' | 'detail'>): string {
  return `${info.type}: ${maskCredentials(info.message)}${info.detail ? ` (CA: ${maskCredentials(info.detail)})` : ''}`;
}

/** An error that ends the CLI with a given exit code and a one-line message. */
export class CliError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(exitCode: ExitCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** A usage error (exit 2). */
export const usageError = (message: string) => new CliError(ExitCode.USAGE, message);

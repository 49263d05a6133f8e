/**
 * The one way an error reaches a log line.
 *
 * An error object can carry anything: an issuer's request headers, an EAB
 * secret in a `cause`, a connection string with a password in its message.
 * certstate logs an error as `{ type, message, code }` only, with credentials
 * in URLs masked, and installs the same function as the `err` serializer of
 * the logger it derives from the user's, so a field named `err` is safe even
 * where a call site forgot.
 */
import type { Logger } from 'pino';

/** What a logged error becomes. */
export interface SafeError {
  type: string;
  message: string;
  code?: string;
}

/** Marks objects `safeError` produced, so serializing twice changes nothing. */
const SAFE = Symbol('certstate.safeError');

/** `scheme://user:password@host` → `scheme://***@host` (connection strings in driver messages). */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/)[^\s/@]+@/gi;

/** Longest message kept: a hostile peer's text must not become a megabyte log line. */
const MAX_MESSAGE = 2_000;

/** An error as it may be logged: its class name, its message (credentials in URLs masked) and a string `code`. */
export function safeError(error: unknown): SafeError {
  if (isSafe(error)) return error;
  const type = error instanceof Error && typeof error.name === 'string' ? error.name : 'Error';
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  const raw = error instanceof Error ? error.message : String(error);
  // No prototype, and a `name`: pino's `err` serializer types an error after
  // its constructor ("Object" for a plain object) and falls back to `name`
  // only when there is none. Logged under `err`, this keeps `"type":"StorageError"`.
  const safe = Object.create(null) as SafeError & { name: string; [SAFE]: true };
  Object.defineProperty(safe, SAFE, { value: true });
  safe.name = type;
  safe.type = type;
  safe.message = maskCredentials(typeof raw === 'string' ? raw : String(raw)).slice(0, MAX_MESSAGE);
  if (typeof code === 'string') safe.code = code.slice(0, 200);
  return safe;
}

function isSafe(value: unknown): value is SafeError {
  return typeof value === 'object' && value !== null && (value as { [SAFE]?: true })[SAFE] === true;
}

/** Mask the user-info part of every URL in a text. */
export function maskCredentials(text: string): string {
  return text.replace(URL_CREDENTIALS, '$1***@');
}

/**
 * The logger certstate writes to: a child of the user's with `safeError` as
 * its `err` serializer (pino merges a child's serializers with its parent's;
 * level and redaction stay the user's). Errors are always logged under `err`.
 */
export function withSafeErrors(logger: Logger): Logger {
  return logger.child({}, { serializers: { err: safeError } });
}

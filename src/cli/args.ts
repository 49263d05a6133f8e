/**
 * Flag parsing on `node:util`'s `parseArgs` (strict: unknown flags are usage
 * errors), plus the value checks every command shares.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { usageError } from './exit-codes.js';

type Options = NonNullable<ParseArgsConfig['options']>;
/** Named so that declaration files can spell it (node's own helper types are not exported). */
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/** Parse `argv` for one command; errors become usage errors (exit 2). */
export function parse<O extends Options>(argv: string[], options: O, usage: string): Parsed<O> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw usageError(`${error instanceof Error ? error.message : String(error)}\n${usage}`);
  }
}

/** `host:port` (IPv6 in brackets) → parts; port 0 allowed (any free port). */
export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usageError(`${flag} must be HOST:PORT (e.g. 127.0.0.1:9090), got ${JSON.stringify(value)}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** A positive number of seconds. */
export function parseSeconds(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw usageError(`${flag} must be a positive number of seconds`);
  return n;
}

/** One of `allowed`. */
export function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], flag: string, fallback: T): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) throw usageError(`${flag} must be one of ${allowed.join(', ')}`);
  return value as T;
}

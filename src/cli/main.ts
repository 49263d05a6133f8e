/**
 * The `certstate` command line. `main(argv, io)` returns the exit code (see
 * `exit-codes.ts` beside this file, docs/cli.md), so tools and tests can run
 * it in-process; `bin/certstate.js` runs it for the shell.
 */
import { readFileSync } from 'node:fs';
import { CertstateError } from '../errors.js';
import { safeError } from '../safe-error.js';
import { CliError, errorText, ExitCode } from './exit-codes.js';
import { processIo, type CliIo } from './io.js';

interface Command {
  USAGE: string;
  run(argv: string[], io: CliIo): Promise<number>;
}

/** Loaded on demand: a command pays only for its own dependencies (ACME, drivers, forge) at start-up. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  status: () => import('./commands/status.js'),
  obtain: () => import('./commands/obtain.js'),
  renew: () => import('./commands/renew.js'),
  revoke: () => import('./commands/revoke.js'),
  export: () => import('./commands/export.js'),
  diagram: () => import('./commands/diagram.js'),
  serve: () => import('./commands/serve.js'),
};

/** Top-level usage text. */
export const USAGE = `Usage: certstate COMMAND [options]

Commands:
  status                 every name in the storage: state, expiry, next action (--json)
  obtain NAME...         obtain certificates, showing each step
  renew NAME             renew one certificate now
  revoke NAME            revoke a certificate at its ACME CA
  export NAME            write a certificate and key as PEM or PKCS#12
  diagram                the lifecycle statechart as Mermaid or SVG
  serve                  run an engine with its admin status page (--demo to try it)

Run "certstate COMMAND --help" for a command's options.
Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 not supported.`;

/** Run the CLI. Resolves with the exit code; never throws. */
export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout).write(`${USAGE}\n`);
    return name === undefined ? ExitCode.USAGE : ExitCode.OK;
  }
  if (name === '--version' || name === '-v') {
    io.stdout.write(`${version()}\n`);
    return ExitCode.OK;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) {
    io.stderr.write(`certstate: unknown command ${JSON.stringify(name)}\n${USAGE}\n`);
    return ExitCode.USAGE;
  }
  try {
    const command = await load();
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout.write(`${command.USAGE}\n`);
      return ExitCode.OK;
    }
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr.write(`certstate ${name}: ${safeError(error).message}\n`);
      return error.exitCode;
    }
    // Storage and configuration errors are expected failures. Any error prints
    // as type and message only: an error object (and its stack) may carry a
    // password from a connection string or other fields that must not leak.
    if (error instanceof CertstateError) {
      io.stderr.write(`certstate ${name}: ${errorText(error)}\n`);
      return ExitCode.FAILURE;
    }
    io.stderr.write(`certstate ${name}: unexpected error: ${errorText(error)}\n`);
    return ExitCode.FAILURE;
  }
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return `certstate ${pkg.version ?? 'unknown'}`;
  } catch {
    return 'certstate';
  }
}

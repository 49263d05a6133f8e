/**
 * The CLI's window on the world, injectable so commands can be run in-process
 * by tests and tools: output streams, environment, working directory, and
 * the "stop" signal (SIGINT/SIGTERM for `serve`).
 */

/** Where the CLI writes, and what it reads from its environment. */
export interface CliIo {
  /** Data: tables, JSON, PEM, diagrams. */
  stdout: { write(chunk: string | Uint8Array): unknown; isTTY?: boolean };
  /** Progress, warnings and errors. */
  stderr: { write(chunk: string): unknown; isTTY?: boolean };
  env: Record<string, string | undefined>;
  cwd: string;
  /** Resolves when the process is asked to stop (long-running commands only). */
  stopRequested(): Promise<string>;
}

/** The real process's io. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    stopRequested: () =>
      new Promise<string>((resolve) => {
        const on = (signal: NodeJS.Signals) => {
          process.off('SIGINT', on);
          process.off('SIGTERM', on);
          resolve(signal);
        };
        process.on('SIGINT', on);
        process.on('SIGTERM', on);
      }),
  };
}

/**
 * The `exec` provider: any DNS system, no code. certstate runs the user's
 * program with lego's exec-provider arguments —
 *
 *     <command> present <fqdn>. <value>
 *     <command> cleanup <fqdn>. <value>
 *
 * (the record name with a trailing dot, after CNAME delegation) — so scripts
 * written for lego work unchanged. Exit status 0 is success; anything else
 * fails the call with the end of the script's stderr, scrubbed of the values
 * of `env` (where its credentials go). No shell is involved; the program is
 * killed (SIGTERM, then SIGKILL) when the attempt is abandoned or its time is up.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ConfigError, DnsProviderError } from '../../../errors.js';
import type { DnsProvider } from '../dns-01.js';
import { defineDnsProvider, type DnsProviderOptions, type TxtRecord } from './provider.js';

/** Options of `execDnsProvider`. */
export interface ExecDnsProviderOptions extends DnsProviderOptions {
  /** The program to run (an absolute path, or a name found on `PATH`). */
  command: string;
  /**
   * Environment added to certstate's own for the program: where its
   * credentials go. Every value is treated as a secret (never in an error).
   */
  env?: Record<string, string>;
  /** Run the program with only `env` (plus `PATH`), not certstate's whole environment. Default false. */
  isolateEnv?: boolean;
  /** Kill the program after this long, ms. Default 60 000 (also the default `requestTimeoutMs`). */
  timeoutMs?: number;
}

/** Bytes of the program's output kept for an error message. */
const OUTPUT_TAIL = 2000;
/** After SIGTERM, the program has this long before SIGKILL. */
const KILL_GRACE_MS = 2000;

/**
 * A `DnsProvider` that runs a program for each change, with lego-compatible
 * arguments. Throws `ConfigError` for bad options.
 *
 * @example
 * execDnsProvider({ command: '/etc/certstate/dns-hook.sh', env: { DNS_API_TOKEN: process.env.DNS_API_TOKEN! } })
 */
export function execDnsProvider(options: ExecDnsProviderOptions): DnsProvider {
  const what = 'execDnsProvider';
  if (typeof options?.command !== 'string' || options.command.length === 0) throw new ConfigError(`${what}: command is required`);
  const env = options.env ?? {};
  for (const [key, value] of Object.entries(env)) {
    if (typeof value !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new ConfigError(`${what}: env must map variable names to strings`);
  }
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new ConfigError(`${what}: timeoutMs must be a positive number`);
  const label = `exec ${path.basename(options.command)}`;

  function run(verb: 'present' | 'cleanup', record: TxtRecord, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const childEnv = options.isolateEnv ? { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } : { ...process.env, ...env };
      const child = spawn(options.command, [verb, `${record.fqdn}.`, record.value], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      const keep = (chunk: Buffer) => {
        output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      let settled = false;
      const finish = (error?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      const kill = () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), KILL_GRACE_MS).unref();
      };
      const onAbort = () => {
        kill();
        finish(signal.reason);
      };
      const timer = setTimeout(() => {
        kill();
        finish(new DnsProviderError(`${label} ${verb} ran longer than ${timeoutMs} ms and was killed`, { code: 'ERR_DNS_TIMEOUT', provider: 'exec' }));
      }, timeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });
      child.on('error', (error) => finish(new DnsProviderError(`${label} could not be started: ${(error as { code?: string }).code ?? error.message}`, { code: 'ERR_DNS_EXEC', provider: 'exec' })));
      child.on('close', (code, killedBy) => {
        if (code === 0) return finish();
        const tail = output.trim().split('\n').slice(-5).join(' | ');
        finish(new DnsProviderError(`${label} ${verb} ${killedBy ? `was killed by ${killedBy}` : `exited with ${code}`}${tail ? `: ${tail}` : ''}`, { code: 'ERR_DNS_EXEC', provider: 'exec', ...(code !== null ? { status: code } : {}) }));
      });
    });
  }

  return defineDnsProvider(
    {
      name: 'exec',
      secrets: Object.values(env),
      add: (record, signal) => run('present', record, signal),
      delete: (record, signal) => run('cleanup', record, signal),
    },
    { ...options, requestTimeoutMs: options.requestTimeoutMs ?? timeoutMs },
  );
}

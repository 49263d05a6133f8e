/**
 * `execDnsProvider` with a real script: a hook in the shape users write for
 * lego, calling `nsupdate` (BIND's own client) against a real BIND. It runs
 * the provider conformance suite, and checks the arguments, the exit status
 * and what becomes of a script that prints its credentials.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { execDnsProvider, type ExecDnsProviderOptions } from '../src/adapters/challenges/dns/exec.js';
import { ConfigError, DnsProviderError } from '../src/errors.js';
import { startBind } from './helpers/bind.js';
import { capturingLogger, runDnsProviderConformance } from './helpers/dns-conformance.js';
import { findExecutable } from './helpers/pebble.js';

const nsupdate = findExecutable('nsupdate');
if (!nsupdate && process.env.CI) throw new Error('nsupdate not found; CI must install Debian\'s bind9-dnsutils');
const bind = nsupdate ? await startBind([{ name: 'example.test' }]) : undefined;
const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-exec-'));
after(async () => {
  await bind?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A lego-style hook: `hook present|cleanup <fqdn.> <value>`, credentials from the environment. */
const HOOK = `#!/bin/sh
set -u
verb="$1"; fqdn="$2"; value="$3"
echo "$verb $fqdn $value" >> "$HOOK_LOG"
case "$verb" in
  present) change="update add $fqdn 60 TXT \\"$value\\"" ;;
  cleanup) change="update delete $fqdn TXT \\"$value\\"" ;;
  *) echo "unknown verb $verb" >&2; exit 2 ;;
esac
if ! printf 'server 127.0.0.1 %s\\n%s\\nsend\\n' "$DNS_PORT" "$change" | nsupdate -y "hmac-sha256:$TSIG_KEY_NAME:$TSIG_SECRET" 2>/dev/null; then
  # A sloppy script that prints its credentials: certstate must not pass them on.
  echo "nsupdate failed for $fqdn with key $TSIG_KEY_NAME:$TSIG_SECRET" >&2
  exit 1
fi
`;
const hook = path.join(dir, 'dns-hook.sh');
const hangingHook = path.join(dir, 'hanging-hook.sh');
const hookLog = path.join(dir, 'hook.log');
await writeFile(hook, HOOK);
await writeFile(hangingHook, '#!/bin/sh\nexec sleep 30\n');
await chmod(hook, 0o755);
await chmod(hangingHook, 0o755);


const skip = bind ? false : 'needs BIND and nsupdate (apt-get install bind9 bind9-dnsutils)';

if (bind) {
  const log = capturingLogger();
  const options = (secret = bind.key.secret, extra: Partial<ExecDnsProviderOptions> = {}): ExecDnsProviderOptions => ({
    command: hook,
    env: { TSIG_KEY_NAME: bind.key.name, TSIG_SECRET: secret, DNS_PORT: String(bind.port), HOOK_LOG: hookLog },
    ...bind.dnsOptions(),
    logger: log.logger,
    ...extra,
  });
  runDnsProviderConformance('exec (a lego-style nsupdate hook into BIND 9)', async () => ({
    provider: execDnsProvider(options()),
    zone: 'example.test',
    published: (fqdn) => bind.txt(fqdn),
    withBadCredentials: () => execDnsProvider(options(Buffer.alloc(32, 9).toString('base64'))),
    hanging: () => execDnsProvider({ ...options(), command: hangingHook, requestTimeoutMs: 500, followCname: false, propagation: false }),
    secrets: [bind.key.secret, Buffer.alloc(32, 9).toString('base64')],
    logs: log.logs,
  }));
}

describe('execDnsProvider', { skip }, () => {
  it('runs the program with lego\'s arguments: present|cleanup, the name with a trailing dot, the value', async () => {
    await writeFile(hookLog, '');
    const p = execDnsProvider({ command: hook, env: { TSIG_KEY_NAME: bind!.key.name, TSIG_SECRET: bind!.key.secret, DNS_PORT: String(bind!.port), HOOK_LOG: hookLog }, followCname: false, propagation: false });
    await p.set('_acme-challenge.args.example.test', 'value-1');
    await p.remove('_acme-challenge.args.example.test', 'value-1');
    assert.deepEqual((await readFile(hookLog, 'utf8')).trim().split('\n'), ['present _acme-challenge.args.example.test. value-1', 'cleanup _acme-challenge.args.example.test. value-1']);
  });

  it('a failing program is a DnsProviderError with its exit status and output, its credentials scrubbed', async () => {
    const wrong = Buffer.alloc(32, 3).toString('base64');
    const p = execDnsProvider({ command: hook, env: { TSIG_KEY_NAME: bind!.key.name, TSIG_SECRET: wrong, DNS_PORT: String(bind!.port), HOOK_LOG: hookLog }, followCname: false, propagation: false });
    const error = await p.set('_acme-challenge.fail.example.test', 'v').then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof DnsProviderError && error.status === 1 && error.code === 'ERR_DNS_EXEC', String(error));
    assert.match(error.message, /present exited with 1: nsupdate failed for _acme-challenge\.fail\.example\.test\. with key \[redacted\]:\[redacted\]/ );
    assert.ok(!error.stack!.includes(wrong)); // every env value counts as a secret, the key name too
  });

  it('a program that cannot be started, and bad options, are typed errors', async () => {
    const p = execDnsProvider({ command: path.join(dir, 'missing'), followCname: false, propagation: false });
    await assert.rejects(p.set('_acme-challenge.x.example.test', 'v'), (e: unknown) => e instanceof DnsProviderError && /ENOENT/.test(e.message));
    assert.throws(() => execDnsProvider({ command: '' }), ConfigError);
    assert.throws(() => execDnsProvider({ command: hook, env: { 'BAD NAME': 'x' } }), ConfigError);
  });
});

/**
 * The real `certstate` binary (bin/certstate.js), run as a child process in a
 * temporary directory: output shapes, documented exit codes, progress, the
 * local CA end to end, PKCS#12, `serve`, and obtain/revoke against Pebble.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { freePort, startPebble, type PebbleHandle } from './helpers/pebble.js';
import { request } from './helpers/browser.js';

const BIN = path.resolve(import.meta.dirname, '..', 'bin', 'certstate.js');
const LIFECYCLE = ['obtaining', 'valid', 'renewing', 'expired-renewing', 'failed-backoff'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the binary to completion. */
function cli(args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string | undefined> = { ...process.env, ...options.env };
    for (const key of Object.keys(env)) if (key.startsWith('CERTSTATE_') && !options.env?.[key]) delete env[key];
    const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'certstate-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('certstate CLI', () => {
  it('status --json on an empty storage parses, with no names', async () => {
    const r = await cli(['status', '--json'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { storage: string; now: number; names: unknown[] };
    assert.equal(json.storage, `file:${path.join(dir, 'certstate-data')}`);
    assert.deepEqual(json.names, []);
  });

  it('obtain with the local issuer prints each step and succeeds; status then shows it valid; a second obtain leaves it alone', async () => {
    const r = await cli(['obtain', 'a.example.test', 'b.example.test'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    for (const step of ['a.example.test: loading stored certificate', 'a.example.test: attempt 1 started (obtain)', 'a.example.test: asking local-ca:default', 'a.example.test: local-ca:default issued a certificate', 'a.example.test: certificate obtained: serial']) {
      assert.ok(r.stderr.includes(step), `progress shows ${JSON.stringify(step)}:\n${r.stderr}`);
    }
    assert.match(r.stdout, /^a\.example\.test: valid until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(serial [0-9A-F]+, issuer local-ca:default\)$/m);
    assert.match(r.stdout, /^b\.example\.test: valid until /m);

    const status = await cli(['status', '--json'], { cwd: dir });
    assert.equal(status.code, 0);
    const names = (JSON.parse(status.stdout) as { names: Array<{ name: string; state: string; certificate: { issuerId: string }; next: { action: string } }> }).names;
    assert.deepEqual(names.map((n) => [n.name, n.state, n.certificate.issuerId, n.next.action]), [
      ['a.example.test', 'valid', 'local-ca:default', 'renew'],
      ['b.example.test', 'valid', 'local-ca:default', 'renew'],
    ]);
    const table = await cli(['status'], { cwd: dir });
    assert.match(table.stdout, /^NAME\s+STATE\s+EXPIRES\s+NEXT\s+ISSUER\s+LAST ERROR$/m);
    assert.match(table.stdout, /^a\.example\.test\s+valid\s+/m);

    const again = await cli(['obtain', 'a.example.test'], { cwd: dir });
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already valid until/);
    assert.ok(!again.stderr.includes('attempt 1 started'), 'no attempt for a valid certificate');
  });

  it('renew replaces the certificate; export writes PEM and a PKCS#12 that TLS can load', async () => {
    const before = JSON.parse((await cli(['status', '--json'], { cwd: dir })).stdout) as { names: Array<{ name: string; certificate: { serial: string } }> };
    const r = await cli(['renew', 'a.example.test'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^a\.example\.test: renewed, valid until/);
    assert.match(r.stderr, /attempt 1 started \(renew\)/);
    const serial = /serial ([0-9A-F]+)/.exec(r.stdout)![1];
    assert.notEqual(serial, before.names.find((n) => n.name === 'a.example.test')!.certificate.serial);

    const pem = await cli(['export', 'a.example.test'], { cwd: dir });
    assert.equal(pem.code, 0);
    assert.match(pem.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n-----BEGIN (RSA |EC )?PRIVATE KEY-----\n[\s\S]+-----END (RSA |EC )?PRIVATE KEY-----\n$/);
    tls.createSecureContext({ cert: pem.stdout, key: pem.stdout });

    const p12 = await cli(['export', 'a.example.test', '--format', 'p12', '--out', 'a.p12'], { cwd: dir, env: { CERTSTATE_EXPORT_PASSWORD: 'correct horse' } });
    assert.equal(p12.code, 0, p12.stderr);
    const file = path.join(dir, 'a.p12');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const pfx = await readFile(file);
    tls.createSecureContext({ pfx, passphrase: 'correct horse' });
    assert.throws(() => tls.createSecureContext({ pfx, passphrase: 'wrong' }), /mac verify failure/i);
  });

  it('diagram --format svg names all five lifecycle states; mermaid is the default', async () => {
    const svg = await cli(['diagram', '--format', 'svg'], { cwd: dir });
    assert.equal(svg.code, 0);
    assert.match(svg.stdout, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const state of LIFECYCLE) assert.ok(svg.stdout.includes(`-label">${state}</text>`), `svg names ${state}`);
    const highlighted = await cli(['diagram', '--format', 'svg', '--highlight', 'expired-renewing'], { cwd: dir });
    assert.match(highlighted.stdout, /class="state current" data-state="expired-renewing"/);
    const compound = await cli(['diagram', '--format', 'svg', '--highlight', 'failed-backoff'], { cwd: dir });
    assert.match(compound.stdout, /class="compound active current" aria-current="true" data-state="failed-backoff"/, 'a state with substates is marked as a whole');
    const mermaid = await cli(['diagram'], { cwd: dir });
    assert.match(mermaid.stdout, /^stateDiagram-v2\n/);
    for (const state of ['obtaining', 'valid', 'renewing', 'expired_renewing', 'failed_backoff']) assert.ok(mermaid.stdout.includes(state));
  });

  it('exit codes: 2 usage, 3 not found, 4 not supported, 1 failure, 0 help', async () => {
    const expect = async (args: string[], code: number, pattern: RegExp, env?: Record<string, string>) => {
      const r = await cli(args, { cwd: dir, env });
      assert.equal(r.code, code, `${args.join(' ')} → ${r.code}\n${r.stderr}`);
      assert.match(r.stderr + r.stdout, pattern);
    };
    // Independent read-only runs, in parallel: each binary start costs about a second.
    await Promise.all([
      expect([], 2, /Usage: certstate COMMAND/),
      expect(['frobnicate'], 2, /unknown command "frobnicate"/),
      expect(['status', '--bogus'], 2, /Unknown option '--bogus'/),
      expect(['obtain'], 2, /obtain needs at least one NAME/),
      expect(['obtain', 'bad..name'], 2, /invalid name/),
      expect(['diagram', '--format', 'png'], 2, /--format must be one of mermaid, svg/),
      expect(['export', 'a.example.test', '--format', 'p12', '--out', 'x.p12'], 2, /needs a password in \$CERTSTATE_EXPORT_PASSWORD/),
      expect(['obtain', 'x.example.test', '--issuer', 'acme', '--directory', 'https://acme.invalid/dir'], 2, /--agree-tos/),
      expect(['serve', '--admin', '0.0.0.0:0', '--name', 'a.example.test'], 2, /without a token/),
      expect(['renew', 'missing.example.test'], 3, /no certificate in file:/),
      expect(['export', 'missing.example.test'], 3, /no certificate/),
      expect(['revoke', 'missing.example.test'], 3, /no certificate/),
      expect(['revoke', 'a.example.test'], 4, /revoke is not supported: the local development CA/),
      expect(['status', '--help'], 0, /Usage: certstate status/),
    ]);
    // An ACME CA that cannot be reached: the attempt fails, the name enters backoff, exit 1.
    const port = await freePort();
    await expect(['obtain', 'down.example.test', '--issuer', 'acme', '--directory', `http://127.0.0.1:${port}/dir`, '--agree-tos', '--no-http'], 1, /down\.example\.test: failed: AcmeNetworkError: .*next attempt not before/);
    const status = JSON.parse((await cli(['status', '--json'], { cwd: dir })).stdout) as { names: Array<{ name: string; state: string; lastError?: { type: string } }> };
    const down = status.names.find((n) => n.name === 'down.example.test')!;
    assert.equal(down.state, 'failed-backoff');
    assert.equal(down.lastError!.type, 'AcmeNetworkError');
    // In backoff, obtain does not retry unless told to.
    await expect(['obtain', 'down.example.test', '--issuer', 'acme', '--directory', `http://127.0.0.1:${port}/dir`, '--agree-tos', '--no-http'], 1, /in backoff .* Use --force/);
  });

  it('serve --demo runs the admin page until SIGTERM, then exits 0', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--demo', '--admin', '127.0.0.1:0'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const deadline = Date.now() + 30_000;
      while (!/admin: (http:\S+)/.test(stdout)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not start:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /admin: (http:\S+)/.exec(stdout)![1]!;
      let names: Array<{ name: string; state: string }> = [];
      while (Date.now() < deadline) {
        names = (JSON.parse((await request(`${url}status.json`)).body) as { names: typeof names }).names;
        if (names.every((n) => n.state === 'valid' || n.state === 'failed-backoff')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(names.map((n) => `${n.name}:${n.state}`).sort(), ['api.demo.localhost:valid', 'demo.localhost:valid', 'flaky.demo.localhost:failed-backoff', 'www.demo.localhost:valid']);
      assert.match((await request(url)).body, /<title>certstate demo<\/title>/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /SIGTERM: stopping/);
  });
});

describe('certstate CLI: one certificate for several names (NAME,NAME,...)', () => {
  it('obtain, status, renew and serve take a certificate of several names; mistakes are usage errors', async () => {
    const cwd = await mkdtemp(path.join(tmpdir(), 'certstate-cli-group-'));
    try {
      const r = await cli(['obtain', 'g.example.test,*.g.example.test', 'solo.example.test'], { cwd });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^g\.example\.test \(with \*\.g\.example\.test\): valid until /m);
      assert.match(r.stdout, /^solo\.example\.test: valid until /m);
      const json = JSON.parse((await cli(['status', '--json'], { cwd })).stdout) as { names: Array<{ name: string; certificate: { names: string[] } }> };
      assert.deepEqual(json.names.map((n) => [n.name, [...n.certificate.names].sort()]), [
        ['g.example.test', ['*.g.example.test', 'g.example.test']],
        ['solo.example.test', ['solo.example.test']],
      ], 'one stored certificate under the first name, with both names');
      assert.match((await cli(['status'], { cwd })).stdout, /^g\.example\.test \(with \*\.g\.example\.test\)\s+valid\s+/m);
      const renewed = await cli(['renew', 'g.example.test,*.g.example.test'], { cwd });
      assert.equal(renewed.code, 0, renewed.stderr);
      assert.match(renewed.stdout, /^g\.example\.test \(with \*\.g\.example\.test\): renewed, valid until/);

      for (const [args, message] of [
        [['obtain', 'x.example.test,*.x.example.test', '*.x.example.test'], /a name belongs to one certificate/],
        [['obtain', '*.y.example.test,a.y.example.test'], /already covers/],
        [['obtain', 'z.example.test,'], /invalid name|empty/i],
      ] as const) {
        const bad = await cli([...args], { cwd });
        assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
        assert.match(bad.stderr, message);
      }

      // serve with no --name serves every stored certificate with the names it was stored with.
      const child = spawn(process.execPath, [BIN, 'serve', '--admin', '127.0.0.1:0', '--https', '127.0.0.1:0'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      try {
        const deadline = Date.now() + 30_000;
        while (!/https: https:\/\/127\.0\.0\.1:(\d+)/.test(stdout)) {
          if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not start:\n${stderr}`);
          await new Promise((res) => setTimeout(res, 50));
        }
        const port = Number(/https: https:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
        const peer = await new Promise<string>((resolve, reject) => {
          const socket = tls.connect({ host: '127.0.0.1', port, servername: 'www.g.example.test', rejectUnauthorized: false }, () => {
            resolve(socket.getPeerX509Certificate()?.subjectAltName ?? '');
            socket.destroy();
          });
          socket.on('error', reject);
        });
        assert.match(peer, /DNS:\*\.g\.example\.test/, 'www.g.example.test is served the stored certificate of both names');
        const url = /admin: (http:\S+)/.exec(stdout)![1]!;
        const names = (JSON.parse((await request(`${url}status.json`)).body) as { names: Array<{ name: string; names?: string[] }> }).names;
        assert.deepEqual(names.map((n) => [n.name, n.names]).sort(), [['g.example.test', ['g.example.test', '*.g.example.test']], ['solo.example.test', undefined]]);
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, 0, stderr);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe('certstate CLI against Pebble', () => {
  let pebble: PebbleHandle | undefined;
  let httpPort: number;
  let caFile: string;
  before(async () => {
    httpPort = await freePort();
    pebble = await startPebble({ httpPort });
    if (pebble) {
      caFile = path.join(dir, 'pebble-ca.pem');
      await writeFile(caFile, pebble.caBundlePem);
    }
  });
  after(async () => {
    await pebble?.stop();
  });

  it('obtain over ACME shows the HTTP-01 steps and succeeds; revoke then revokes it at the CA', async (t) => {
    if (!pebble) return t.skip('pebble is not installed (apt-get install pebble)');
    const storage = ['--storage', 'file:./pebble-data'];
    const acme = ['--issuer', 'acme', '--directory', pebble.directoryUrl, '--email', 'ops@example.com', '--agree-tos', '--ca-bundle', caFile, '--http-listen', `127.0.0.1:${httpPort}`];
    const r = await cli(['obtain', 'cli.example.com', ...acme, ...storage], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const steps = ['attempt 1 started (obtain)', `asking acme:${pebble.directoryUrl}`, 'registering an ACME account', 'ACME account registered', 'http-01 challenge published; waiting for the CA to validate', 'http-01 challenge removed (authorization finished)', 'issued a certificate in', 'certificate obtained'];
    let last = -1;
    for (const step of steps) {
      const at = r.stderr.indexOf(step);
      assert.ok(at > last, `step ${JSON.stringify(step)} in order:\n${r.stderr}`);
      last = at;
    }
    assert.match(r.stdout, new RegExp(`^cli\\.example\\.com: valid until .* issuer acme:${pebble.directoryUrl.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)$`, 'm'));

    const revoke = await cli(['revoke', 'cli.example.com', '--reason', '4', '--ca-bundle', caFile, ...storage], { cwd: dir });
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /revoked certificate [0-9A-F]+ .* \(signed with the ACME account\)/);
    // The CA agrees: a second revocation is refused as alreadyRevoked.
    const again = await cli(['revoke', 'cli.example.com', '--ca-bundle', caFile, ...storage], { cwd: dir });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /alreadyRevoked|already revoked/i);
  });
});
